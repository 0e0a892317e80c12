"""Named, typed, configurable components: the registry and the ``name:key=value,…`` spec syntax.

Policies, predictors, step-time models, energy models and trace loaders are all chosen by a string
(CLI flag, config file, sweep grid, router flag). One parser and one registry type serve them all, so
an unknown name or key fails the same way everywhere: with the list of valid choices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from .config import ConfigError, build

T = TypeVar("T")


class SpecError(ConfigError):
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


def build_config(cls: type[T], options: dict[str, str] | None = None, *, what: str = "") -> T:
    """Instantiate a config dataclass from a spec's string options (``config.build``, errors as ``SpecError``)."""
    return build(cls, options, f"{what or cls.__name__}: ", kind="option", error=SpecError)


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

    def entries(self) -> list[Entry[T]]:
        """Every entry, in the order the registry lists them."""
        return list(self._entries.values())

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
        if entry.config_cls is None or not fields(entry.config_cls):
            if options:
                raise SpecError(f"{self.kind} {name!r} takes no options (got {', '.join(options)})")
            return entry, (None if entry.config_cls is None else entry.config_cls())
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
