"""The exception types for bad input: the CLI prints one on one line and exits with code 2."""

import re
from collections.abc import Callable


class UserError(ValueError):
    """Input the user can fix (a config key, a path, a column); the message names the problem."""


class OptionError(UserError):
    """A bad value of named options, written as `{keyword}` in the message. The library names
    each as its keyword (`target_flops`); the CLI, the only part that knows its flags, names
    it as the flag (`--target-flops`)."""

    def __init__(self, template: str):
        self.template = template
        self.options = tuple(re.findall(r"\{([a-z][a-z0-9_]*)\}", template))
        super().__init__(self.spelled(str))

    def spelled(self, name: Callable[[str], str]) -> str:
        """The message with each option called `name(keyword)`."""
        text = self.template
        for option in self.options:
            text = text.replace("{" + option + "}", name(option))
        return text
