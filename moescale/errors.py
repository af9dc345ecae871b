"""The one exception type for bad input: the CLI prints it on one line and exits with code 2."""


class UserError(ValueError):
    """Input the user can fix (a config key, a path, a column); the message names the problem."""
