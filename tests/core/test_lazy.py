"""Packages whose heavy modules load on first use: the CLI starts without scipy or aiohttp, and every lazy name
still resolves to the object its module defines."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

from dpbalance.core.lazy import lazy_exports

LAZY_PACKAGES = [
    "dpbalance.analysis",
    "dpbalance.calibrate",
    "dpbalance.emulator",
    "dpbalance.gateway",
    "dpbalance.loadgen",
]


def test_cli_starts_without_the_heavy_libraries():
    code = (
        "import sys, dpbalance.cli.main\n"
        "heavy = sorted(m for m in ('scipy', 'aiohttp', 'grpc') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the CLI loaded {out.stdout.strip()}"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_name_resolves_to_its_modules_object(package):
    pkg = importlib.import_module(package)
    lazy = pkg._LAZY
    assert set(lazy) <= set(pkg.__all__)
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not set(lazy) & submodules, "a lazy name that is also a submodule is shadowed once the submodule loads"
    for name, module in lazy.items():
        if package == "dpbalance.gateway" and module == ".server":
            pytest.importorskip("grpc")
        assert getattr(pkg, name) is getattr(importlib.import_module(module, package), name)


def test_an_unknown_name_is_a_missing_attribute():
    getattr_ = lazy_exports("dpbalance.calibrate", {"fit": ".fit"})
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        getattr_("nope")
    with pytest.raises(AttributeError):
        importlib.import_module("dpbalance.loadgen").nope  # noqa: B018
