"""Grid cells carry the engine model's settings under their flat names, as the command line does."""

import pytest

from dpbalance.sweep.grid import Cell, GridError, expand


def test_engine_settings_are_flat_cell_fields_and_round_trip():
    c = Cell.from_dict({"policy": "br0", "trace": "sample", "prefill": True, "kv_capacity": 5000})
    assert c.sim.engine.prefill and c.sim.engine.kv_capacity == 5000
    d = c.to_dict()
    assert "engine" not in d and d["prefill"] is True and d["prefix_cache"] is False
    assert Cell.from_dict(d) == c


def test_an_engine_axis_expands_and_a_bad_value_names_the_field():
    cells = expand({"policy": "br0", "trace": "sample"}, {"prefix_cache": [False, True]})
    assert [c.sim.engine.prefix_cache for c in cells] == [False, True]
    with pytest.raises(GridError, match="kv_capacity"):
        Cell.from_dict({"trace": "sample", "kv_capacity": "lots"})
