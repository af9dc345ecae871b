"""Reading YAML files and validating them into typed configs, with one-line errors."""

from __future__ import annotations

import difflib
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


def _field_paths(model: Any, prefix: str = "", seen: set | None = None) -> dict[str, str]:
    """Every key a config model (and the models inside it) accepts, with where it goes
    ('recipe.seq_len'; the shallowest place where a name is accepted twice), for 'did you
    mean'."""
    seen = set() if seen is None else seen
    if model in seen or not isinstance(model, type):
        return {}
    seen.add(model)
    fields = getattr(model, "model_fields", None) or getattr(model, "__dataclass_fields__", None)
    if not fields:
        return {}
    paths = {name: f"{prefix}{name}" for name in fields}
    for name, field in fields.items():
        annotation = getattr(field, "annotation", None) or getattr(field, "type", None)
        for inner in (annotation, *getattr(annotation, "__args__", ())):
            for key, path in _field_paths(inner, f"{prefix}{name}.", seen).items():
                if key not in paths or path.count(".") < paths[key].count("."):
                    paths[key] = path
    return paths


def validation_message(err: pydantic.ValidationError, prefix: str = "", model: Any = None) -> str:
    """Every problem of a pydantic error as 'key.path: message', on one line ('; ' between
    them), with the nearest known key suggested for an unknown one."""
    known = _field_paths(model) if model is not None else {}
    problems = []
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"])
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
            name = str(problem["loc"][-1])
            near = difflib.get_close_matches(name, sorted(known), n=1)
            if near and near[0] == name:  # a known key, in the wrong place
                message += f" here (it belongs at '{known[name]}')"
            elif near:
                message += f" (did you mean '{near[0]}'?)"
        elif problem["type"] == "value_error":
            message = str(problem.get("ctx", {}).get("error", message))
        if not key:  # a rule of the model itself (e.g. from __post_init__) names its own field
            problems.append(message)
        else:
            problems.append(f"{prefix}.{key}: {message}" if prefix else f"{key}: {message}")
    return "; ".join(dict.fromkeys(problems))


def validate(model: type[T], data: Any, source: str = "", prefix: str = "") -> T:
    """Validate `data` into `model` (a pydantic model or dataclass); errors become one-line
    UserErrors, prefixed by the `source` file and the key `prefix` when given."""
    try:
        return pydantic.TypeAdapter(model).validate_python(data)
    except pydantic.ValidationError as err:
        message = validation_message(err, prefix, model)
        raise UserError(f"{source}: {message}" if source else message) from None
