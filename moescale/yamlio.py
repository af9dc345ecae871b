"""Reading YAML files and validating them into typed configs, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from moescale.errors import UserError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from `path`; a missing file or malformed YAML is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys at the top level")
    return data


def validation_message(err: pydantic.ValidationError, prefix: str = "") -> str:
    """The first problem of a pydantic error as 'key.path: message' on one line."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "value_error":
        message = str(first.get("ctx", {}).get("error", message))
    if not key:  # a rule of the model itself (e.g. from __post_init__) names its own field
        return message
    return f"{prefix}.{key}: {message}" if prefix else f"{key}: {message}"


def validate(model: type[T], data: Any, source: str = "", prefix: str = "") -> T:
    """Validate `data` into `model` (a pydantic model or dataclass); errors become one-line
    UserErrors, prefixed by the `source` file and the key `prefix` when given."""
    try:
        return pydantic.TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as err:
        message = validation_message(err, prefix)
        raise UserError(f"{source}: {message}" if source else message) from None
