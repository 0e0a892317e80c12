"""Typed settings: how a setting is declared, and the one path that turns user input into typed values.

Every config dataclass (simulator, engine, trace selection, router, a policy's options, …) declares each field
with ``setting(default, doc, …)``: its default, its help text and what the command-line generator and the
checks need (``flags``, ``min``, ``max``, ``envvar``, ``cli``, ``panel``). Values reach a config from four
places — the command line, a config file (YAML, TOML or JSON), a sweep grid's cell and a spec string
(``brh:H=40``) — and all four go through ``convert`` (one value to one field's type) and ``build`` (a mapping to
the dataclass, unknown keys and bounds checked, then the dataclass's own validation). Strings are parsed (``"40"``
for an int, ``"off"`` for a bool, ``"none"`` for an optional), values already of the right type pass, and a type
with a ``parse(text)`` classmethod (a policy spec, say) is built from its text.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A setting has an unknown name or a value that does not fit it; the message names which and why."""


class ConfigFileError(ConfigError):
    """A config file cannot be read or does not match the settings it configures."""


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    panel: str | None = None,
    *,
    default_factory: Any = dataclasses.MISSING,
    **meta: Any,
) -> Any:
    """A config dataclass field: its default (or ``default_factory``), its help text ``doc``, the ``--help``
    section ``panel``, and the other keys the command-line generator and ``build`` read (``flags``, ``min``,
    ``max``, ``envvar``, ``cli``, ``label``)."""
    md = {"doc": doc, **meta}
    if panel is not None:
        md["panel"] = panel
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_NONE = {"none", "null", ""}


def type_name(tp: Any) -> str:
    """How a type reads in an error message or a ``--help`` metavar."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"list of {type_name(typing.get_args(tp)[0])}"
    return {int: "integer", float: "number", bool: "boolean", str: "text", Path: "path"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def convert(value: Any, tp: Any, where: str = "value") -> Any:
    """``value`` as type ``tp`` (see the module docstring); raises ``ConfigError`` naming ``where``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (type(None) in args and isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(f"{where}: {value!r} is not a valid {type_name(tp)}") from None
    if origin is typing.Literal:
        for c in typing.get_args(tp):
            if value == c or (isinstance(value, str) and str(c) == value.strip()):
                return c
        choices = ", ".join(repr(c) for c in typing.get_args(tp))
        raise ConfigError(f"{where}: {value!r} is not one of {choices}")
    if origin is tuple:
        (item, *_rest) = typing.get_args(tp) or (str,)
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return build(tp, value, f"{where}.")
    if isinstance(tp, type) and isinstance(value, tp) and not (tp in (int, float) and isinstance(value, bool)):
        return value
    return _scalar(value, tp, where)


def _scalar(value: Any, tp: Any, where: str) -> Any:
    bad = ConfigError(f"{where}: {value!r} is not a valid {type_name(tp)}")
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is Path and isinstance(value, str):
        return Path(value).expanduser()
    parse = getattr(tp, "parse", None) if isinstance(tp, type) else None
    if parse is not None and isinstance(value, str):
        try:
            return parse(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if tp is str:
        raise bad
    raise ConfigError(f"{where}: unsupported setting type {tp!r}")


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_bounds(f: dataclasses.Field, value: Any, where: str) -> None:
    """A field's ``min`` / ``max`` (inclusive), for numbers that are set."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = f.metadata.get("min"), f.metadata.get("max")
    if lo is not None and value < lo:
        raise ConfigError(f"{where}: {value!r} is below the minimum {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is above the maximum {hi}")


def build(
    cls: type[T],
    values: Mapping[str, Any] | None,
    where: str = "",
    *,
    kind: str = "setting",
    error: type[ConfigError] = ConfigError,
) -> T:
    """An instance of the config dataclass ``cls`` from ``values``: unknown keys are errors listing the valid
    ones, each value goes through ``convert`` and the field's bounds, then the dataclass's own validation runs.
    ``where`` prefixes messages (a file name, ``"policy 'brh' "``), ``kind`` names a key ("setting", "option")."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    values = dict(values or {})
    valid = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(valid))
    if unknown:
        listed = ", ".join(sorted(valid)) or "(none)"
        s = "s" if len(unknown) > 1 else ""
        raise error(f"{where}unknown {kind}{s} {', '.join(map(repr, unknown))}; valid {kind}s: {listed}")
    hints = _hints(cls)
    kwargs = {}
    try:
        for name, raw in values.items():
            label = f"{where}{kind} {name!r}"
            kwargs[name] = v = convert(raw, hints[name], label)
            check_bounds(valid[name], v, label)
        return cls(**kwargs)
    except ConfigError as exc:
        raise error(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise error(f"{where}{exc}") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """A mapping from a .yaml/.yml/.toml/.json file; keys normalised to underscores."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigFileError(f"{path}: does not parse: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a mapping of setting: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_from_mapping(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """A config dataclass from a file's or a grid cell's mapping (``build`` with file errors)."""
    return build(cls, data, where, error=ConfigFileError)


# ---------------------------------------------------------------------- nested configs shown flat
def nested_fields(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that hold a config of their own shown flat (``setting(..., flatten=True)``): name ->
    its dataclass. Their fields are options, config-file keys and grid-cell fields like the outer ones."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.metadata.get("flatten")}


def flat_names(cls: type) -> list[str]:
    """Every settable name of ``cls``, nested configs' fields in place of the nested field."""
    nested = nested_fields(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.init:
            out += flat_names(nested[f.name]) if f.name in nested else [f.name]
    return out


def nest(cls: type, flat: dict[str, Any]) -> dict[str, Any]:
    """A flat mapping of ``cls``'s settings (``flat_names``) as the nested mapping ``core.config.build`` takes; a
    nested config given as a mapping of its own is merged under the flat keys."""
    out = {k: v for k, v in flat.items() if k not in nested_fields(cls)}
    for name, sub in nested_fields(cls).items():
        given = flat.get(name) if isinstance(flat.get(name), dict) else {}
        inner = {**given, **{k: out.pop(k) for k in flat_names(sub) if k in out}}
        if inner:
            out[name] = nest(sub, inner)
    return out


def flat_values(obj: Any) -> dict[str, Any]:
    """A config instance's settings by ``flat_names`` (nested configs' fields in place of the nested field)."""
    nested = nested_fields(type(obj))
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name in nested:
            out.update(flat_values(v))
        else:
            out[f.name] = dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
    return out
