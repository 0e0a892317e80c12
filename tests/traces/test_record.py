"""Recordings: a round trip through the writer and --trace, a killed writer's half line, rotation, bad lines."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpbalance.traces import TraceError, load_trace
from dpbalance.traces.record import RecordWriter, load_record, prompt_hash


def write(path, rows, **kw):
    w = RecordWriter(path, **kw)
    for r in rows:
        w.write(**r)
    w.close()


ROWS = [
    dict(
        t=1000.5,
        prompt_tokens=120,
        output_tokens=30,
        prompt_hash=prompt_hash("hello"),
        rank=1,
        policy="br0",
        outcome="completed",
    ),
    dict(
        t=1000.25,
        prompt_tokens=40,
        output_tokens=0,
        prompt_hash=prompt_hash([1, 2]),
        rank=None,
        policy="br0",
        outcome="rejected",
    ),
    dict(
        t=1001.0,
        prompt_tokens=80,
        output_tokens=7,
        prompt_hash=prompt_hash("hello"),
        rank=0,
        policy="br0",
        outcome="failed",
    ),
]


def test_round_trip_through_trace(tmp_path):
    p = tmp_path / "traffic.jsonl"
    write(p, ROWS)
    assert "hello" not in p.read_text()  # the prompt itself is never stored
    w = load_trace(str(p))  # the format is sniffed
    # the rejected request generated nothing and does not replay; arrivals are relative to the first replayed
    np.testing.assert_allclose(w.arrival, [0.0, 0.5])
    assert w.prompt.tolist() == [120, 80] and w.output.tolist() == [30, 7]
    assert w.key[0] == w.key[1] != -1  # equal prompts, equal keys
    assert w.meta["dropped"] == {"no_output_tokens": 1}


def test_killed_writer_half_line_is_skipped_with_a_warning(tmp_path):
    p = tmp_path / "t.jsonl"
    write(p, ROWS[:1])
    with open(p, "ab") as f:
        f.write(b'{"v": 1, "t": 1002.0, "prompt_tok')  # the process died mid-line
    with pytest.warns(UserWarning, match="incomplete"):
        w = load_record(p)
    assert len(w) == 1


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path):
    p = tmp_path / "t.jsonl"
    write(p, ROWS[:1])
    with open(p, "a") as f:
        f.write("not json\n" + json.dumps({"t": 1, "prompt_tokens": 1, "output_tokens": 1}) + "\n")
    with pytest.raises(TraceError, match=r"t\.jsonl:2: invalid JSON"):
        load_record(p)


def test_rotation_keeps_every_line_and_the_newest_file_is_current(tmp_path):
    p = tmp_path / "r.jsonl"
    line = (
        len(
            json.dumps(
                {
                    "v": 1,
                    "t": 1000.5,
                    "prompt_tokens": 120,
                    "output_tokens": 30,
                    "prompt_hash": prompt_hash("hello"),
                    "policy": "br0",
                    "outcome": "completed",
                    "rank": 1,
                },
                separators=(",", ":"),
            )
        )
        + 1
    )
    write(p, [dict(ROWS[0], t=1000.0 + i) for i in range(10)], max_bytes=3 * line, keep=10)
    files = sorted(tmp_path.iterdir())
    total = sum(len(f.read_text().splitlines()) for f in files)
    assert total == 10 and len(files) == 4
    assert json.loads(p.read_text().splitlines()[-1])["t"] == 1009.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # whole lines only
        for f in files:
            load_record(f)


def test_block_hashes_round_trip_and_a_replay_finds_the_shared_prefix(tmp_path):
    from dpbalance.engine.hashing import block_hashes

    words = [f"w{i}" for i in range(40)]
    first, second = block_hashes(words), block_hashes(words[:32] + ["other"] * 8)
    rows = [
        {**ROWS[0], "blocks": first, "prompt_tokens": 40},
        {**ROWS[2], "blocks": second, "prompt_tokens": 40},
    ]
    p = tmp_path / "traffic.jsonl"
    write(p, rows)
    w = load_record(p)
    assert w.blocks.size == 16 and w.blocks.of(0).tolist() == first and w.blocks.of(1).tolist() == second
    # one cache: the second prompt shares its first two blocks with the first
    assert w.prefix_stats()["prefix_reuse"] == pytest.approx(32 / 80)


def test_recorded_blocks_that_are_not_hashes_or_mix_sizes_are_errors(tmp_path):
    p = tmp_path / "bad.jsonl"
    write(p, [{**ROWS[0], "blocks": [1, 2]}, {**ROWS[2], "blocks": [3], "block_size": 32}])
    with pytest.raises(TraceError, match="block_size 32 differs"):
        load_record(p)
    p.write_text(json.dumps({"t": 1, "prompt_tokens": 3, "output_tokens": 1, "blocks": ["a"]}) + "\n")
    with pytest.raises(TraceError, match=r"bad.jsonl:1: .*integer block hashes"):
        load_record(p)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=200),
    st.integers(min_value=1, max_value=40),
)
def test_block_hashes_of_token_ids_are_those_of_the_token_by_token_hash(ids, bs):
    from dpbalance.engine.hashing import _block_hashes_slow, block_hashes

    # the fast path hashes the same bytes: recordings made before it compare equal with those made after
    assert block_hashes(ids, bs) == _block_hashes_slow(ids, bs)
    assert block_hashes(np.asarray(ids, dtype=np.int64), bs) == _block_hashes_slow(ids, bs)


_GOLDEN_0_15 = 5753832455673805477  # block_hashes(range(16), 16), as the per-token hash gave it


def test_block_hashes_keep_their_values_and_tell_strings_from_ids():
    from dpbalance.engine.hashing import block_hashes

    # a golden value, fixed when the hash was first defined (a change here breaks every recording's hashes)
    assert block_hashes(list(range(16)), 16) == [_GOLDEN_0_15]
    # token strings that look like numbers are strings, not ids
    assert block_hashes([str(i) for i in range(16)], 16) != block_hashes(list(range(16)), 16)
