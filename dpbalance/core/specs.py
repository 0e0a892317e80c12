"""Named, typed, configurable components: the registry and the ``name:key=value,…`` spec syntax.

Policies, predictors, step-time models, energy models and trace loaders are all chosen by a string
(CLI flag, config file, sweep grid, router flag). One parser and one registry type serve them all, so
an unknown name or key fails the same way everywhere: with the list of valid choices.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SpecError(ValueError):
    """A component spec names something unknown or carries a bad value."""


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``"brh:predictor=survival,H=40"`` into ``("brh", {"predictor": "survival", "H": "40"})``."""
    spec = spec.strip()
    if not spec:
        raise SpecError("empty spec: expected 'name' or 'name:key=value,...'")
    name, _, rest = spec.partition(":")
    name = name.strip()
    kv: dict[str, str] = {}
    if rest.strip():
        for part in rest.split(","):
            part = part.strip()
            if not part:
                continue
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise SpecError(f"bad option {part!r} in spec {spec!r}: expected key=value")
            key = key.strip()
            if key in kv:
                raise SpecError(f"option {key!r} given twice in spec {spec!r}")
            kv[key] = value.strip()
    return name, kv


def split_specs(text: str) -> list[str]:
    """Split a comma-separated list of specs where specs may themselves contain commas.

    ``"jsq_count,brh:H=40,gamma=0.8,br0"`` -> ``["jsq_count", "brh:H=40,gamma=0.8", "br0"]``: a part
    containing ``=`` but no ``:`` continues the previous spec's options.
    """
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "=" in part and ":" not in part and out and ":" in out[-1]:
            out[-1] = out[-1] + "," + part
        else:
            out.append(part)
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(value: str, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value.lower() in ("none", "null", ""):
            return None
        last: Exception | None = None
        for a in args:
            try:
                return _convert(value, a, where)
            except SpecError as exc:
                last = exc
        raise SpecError(str(last))
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == value:
                return c
        raise SpecError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
    try:
        if tp is bool:
            low = value.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(value)
        if tp is int:
            f = float(value)
            if not f.is_integer():
                raise ValueError(value)
            return int(f)
        if tp is float:
            return float(value)
        if tp is str:
            return value
    except ValueError:
        raise SpecError(f"{where}: {value!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    raise SpecError(f"{where}: unsupported option type {tp!r}")


def build_config(cls: type[T], options: dict[str, str] | None = None, *, what: str = "") -> T:
    """Instantiate a frozen dataclass config from string options, converting each to its field type."""
    options = options or {}
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    valid = {f.name: f for f in fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, raw in options.items():
        if key not in valid:
            known = ", ".join(sorted(valid)) or "(none)"
            raise SpecError(f"unknown option {key!r} for {what or cls.__name__}; valid options: {known}")
        kwargs[key] = _convert(raw, hints[key], f"{what or cls.__name__} option {key!r}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SpecError(f"{what or cls.__name__}: {exc}") from None


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    config_cls: type | None
    summary: str


class Registry(Generic[T]):
    """Name -> factory, built from an explicit list of entries (each kind has one registry module that lists
    every implementation); read-only afterwards."""

    def __init__(self, kind: str, plural: str | None = None, entries: list[Entry[T]] | tuple = ()):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: dict[str, Entry[T]] = {}
        for e in entries:
            if e.name in self._entries:
                raise RuntimeError(f"{kind} {e.name!r} listed twice")
            self._entries[e.name] = e

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise SpecError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}") from None

    def config_for(self, spec: str) -> tuple[Entry[T], Any]:
        """Parse a spec and build its typed config (None for components without knobs)."""
        name, options = parse_spec(spec)
        entry = self.entry(name)
        if entry.config_cls is None:
            if options:
                raise SpecError(f"{self.kind} {name!r} takes no options (got {', '.join(options)})")
            return entry, None
        return entry, build_config(entry.config_cls, options, what=f"{self.kind} {name!r}")

    def create(self, spec: str, **context: Any) -> T:
        entry, cfg = self.config_for(spec)
        if cfg is None:
            return entry.factory(**context)
        return entry.factory(cfg, **context)

    def describe(self) -> list[tuple[str, str, list[tuple[str, Any, str]]]]:
        """(name, summary, [(option, default, doc)]) for help output."""
        out = []
        for name in self.names():
            e = self._entries[name]
            opts = []
            if e.config_cls is not None:
                for f in fields(e.config_cls):
                    default = f.default if f.default is not dataclasses.MISSING else None
                    opts.append((f.name, default, f.metadata.get("doc", "")))
            out.append((name, e.summary, opts))
        return out
