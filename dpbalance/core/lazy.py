"""Package attributes that load their module on first use (PEP 562), for packages whose heavy modules (scipy,
aiohttp) the CLI must not load just to start: ``__getattr__ = lazy_exports(__name__, {"name": ".module"})``.

A lazy name must not also be a submodule's name: importing a submodule binds it on its package, and that binding
would then shadow the lazy attribute (tested for every lazy package)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports ``names[attr]`` (a module relative to ``package``) and returns its
    ``attr``; any other name raises AttributeError as a missing attribute does."""

    def __getattr__(attr: str) -> object:
        module = names.get(attr)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {attr!r}")
        value = getattr(import_module(module, package), attr)
        setattr(sys.modules[package], attr, value)  # found directly from now on
        return value

    return __getattr__
