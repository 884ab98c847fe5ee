"""YAML recipes → nested dataclasses, with unknown keys and wrong types refused in one clear line.

Training recipes go through TRL's TrlParser; generation, RL and eval recipes use this (same style): a YAML file,
then `--set a.b=value` overrides from the command line.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from seekhelp.errors import SeekhelpError

T = TypeVar("T")


class RecipeError(SeekhelpError, ValueError):
    """A recipe problem, phrased as one line naming the file and the field."""


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except RecipeError as e:
                errors.append(str(e))
        raise RecipeError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return build(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise RecipeError(f"{where}: expected a list, got {type(value).__name__}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def build(cls: type[T], data: dict, where: str = "recipe") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecipeError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def _set(data: dict, dotted: str, raw: str) -> None:
    """Set `a.b.c` to the YAML value `raw`; a number steps into a list (`endpoints.0.base_url`)."""
    keys = dotted.split(".")
    node: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise RecipeError(f"--set {dotted}: {k!r} is not an index of a {len(node)}-item list")
            if last:
                node[int(k)] = yaml.safe_load(raw)
            else:
                node = node[int(k)]
        elif isinstance(node, dict):
            if last:
                node[k] = yaml.safe_load(raw)
            else:
                node = node.setdefault(k, {})
        else:
            raise RecipeError(f"--set {dotted}: {keys[i - 1]} is not a mapping")


def load_recipe(cls: type[T], path: str | Path, overrides: list[str] | None = None) -> T:
    """Read a YAML recipe into `cls`; overrides are `dotted.key=value` strings (values parsed as YAML)."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: recipe file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if not isinstance(data, dict):
        raise RecipeError(f"{p}: the top level must be a mapping")
    for o in overrides or []:
        if "=" not in o:
            raise RecipeError(f"--set {o!r}: expected key=value")
        k, v = o.split("=", 1)
        _set(data, k.strip(), v)
    return build(cls, data, str(p))


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
