"""The Faust stages commit only runs of processed offsets that start at the committed offset
(`bench.faust_offsets`); the worker-kill test exercises it against a real broker."""

from __future__ import annotations

from bench.faust_offsets import head_run


def test_run_from_the_committed_offset_is_committed() -> None:
    acked = [12, 10, 11, 14]
    assert head_run(acked, 10) == (13, 3)
    assert acked[3:] == [14]


def test_missing_head_record_blocks_the_commit() -> None:
    # Faust allowed a run to start one past the committed offset, passing over record 10.
    assert head_run([11, 12, 13], 10) == (None, 0)
    assert head_run([25, 26, 27], 10) == (None, 0)


def test_offsets_below_the_committed_one_are_dropped() -> None:
    acked = [3, 4, 10, 11]
    assert head_run(acked, 10) == (12, 4)
    assert head_run([3, 4, 12], 10) == (None, 2)


def test_nothing_acknowledged() -> None:
    assert head_run([], 0) == (None, 0)
