"""The registry lists every experiment module, and selection follows the dependencies."""

import importlib
import pkgutil

import pytest

import dpbalance.experiments as pkg
from dpbalance.experiments import registry


def test_every_experiment_module_is_registered_once():
    defined = []
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
        if hasattr(mod, "EXPERIMENT"):
            defined.append(mod.EXPERIMENT)
    assert sorted(e.name for e in defined) == sorted(e.name for e in registry.EXPERIMENTS)
    assert len({e.name for e in registry.EXPERIMENTS}) == len(registry.EXPERIMENTS)
    assert len({e.title for e in registry.EXPERIMENTS}) == len(registry.EXPERIMENTS)
    for e in registry.EXPERIMENTS:
        assert set(e.needs) <= set(registry.BY_NAME) and (e.follows is None or e.follows in registry.BY_NAME)


def test_selection_follows_and_needs():
    names = lambda es: [e.name for e in es]  # noqa: E731
    assert names(registry.select(None)) == names(registry.EXPERIMENTS)
    assert names(registry.select(["main"])) == ["summary", "main", "anchors", "overhead"]
    assert names(registry.select(["energy"])) == ["summary", "energy"]
    assert names(registry.with_needs(registry.select(["energy"]))) == ["summary", "main", "energy"]
    with pytest.raises(ValueError, match="valid: summary, main"):
        registry.select(["nope"])
