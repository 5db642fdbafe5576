"""The benchmark's pure helpers: percentiles, ratio verdicts, perf-tool parsing, README splice."""

from __future__ import annotations

import pytest
from bench.harness import (
    README_END,
    README_START,
    median_pair,
    percentile,
    ratio_result,
    splice_readme,
)
from bench.latency import Repetition, light_rows, target_rows
from bench.pipeline import BacklogRun, backlog_rows
from bench.raw import parse_consumer_perf, parse_producer_perf


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 50) == 50.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 99)


@pytest.mark.parametrize(
    ("value", "baseline", "bound", "target", "met"),
    [
        (60.0, 100.0, {"at_least": 0.6}, ">= 0.6", True),
        (59.0, 100.0, {"at_least": 0.6}, ">= 0.6", False),
        (125.0, 100.0, {"at_most": 1.25}, "<= 1.25", True),
        (126.0, 100.0, {"at_most": 1.25}, "<= 1.25", False),
        (5.0, 1.0, {}, "(reported)", True),
    ],
)
def test_ratio_result_checks_the_bound(
    value: float, baseline: float, bound: dict[str, float], target: str, met: bool
) -> None:
    r = ratio_result("x", value, baseline, "u", **bound)
    assert r.ratio == pytest.approx(value / baseline)
    assert (r.target, r.met) == (target, met)


def test_a_missing_baseline_never_meets_a_bound() -> None:
    assert not ratio_result("x", 1.0, 0.0, "u", at_least=0.5).met
    assert not ratio_result("x", 1.0, 0.0, "u", at_most=4).met


def test_kafka_tool_outputs_are_parsed() -> None:
    producer = (
        "49996 records sent, 9999.2 records/sec (9.76 MB/sec), 3.1 ms avg latency.\n"
        "50000 records sent, 12345.6 records/sec (12.06 MB/sec), 2.9 ms avg latency, "
        "250.0 ms max latency, 2 ms 50th, 9 ms 95th, 20 ms 99th, 40 ms 99.9th.\n"
    )
    assert parse_producer_perf(producer) == 12345.6
    consumer = (
        "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, "
        "rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n"
        "2026-11-27 01:00:00:000, 2026-11-27 01:00:02:000, 48.8, 24.4, 50000, 25000.0, "
        "300, 1700, 28.7, 29411.8\n"
    )
    assert parse_consumer_perf(consumer) == 25000.0
    with pytest.raises(ValueError):
        parse_producer_perf("nothing")


def test_splice_replaces_only_between_markers() -> None:
    readme = f"intro\n{README_START}\nold table\n{README_END}\noutro\n"
    out = splice_readme(readme, "| new |\n")
    assert "old table" not in out
    assert out.startswith("intro\n")
    assert out.endswith(f"{README_END}\noutro\n")
    assert "| new |" in out
    assert splice_readme("no markers", "| new |") == "no markers"


def test_median_pair_keeps_a_repetition_whole() -> None:
    """The ratio of a section is one repetition's, not a median value over a median baseline
    taken from different repetitions."""
    pairs = [(5.0, 10.0), (9.0, 12.0), (3.0, 10.0)]  # ratios 0.5, 0.75, 0.3
    assert median_pair(pairs) == (5.0, 10.0)
    assert median_pair([(1.0, 2.0), (3.0, 4.0)]) == (1.0, 2.0)  # the lower middle of two
    assert median_pair([(7.0, 0.0), (1.0, 1.0), (2.0, 1.0)]) == (1.0, 1.0)  # no baseline: lowest


def _ms(*values: float) -> list[float]:
    return [v / 1000 for v in values]


def test_latency_target_rows_need_both_bounds() -> None:
    raw = _ms(*([1.0] * 99 + [5.0]))  # p99 1 ms
    quick = _ms(*([8.0] * 100))  # 8x
    slow = _ms(*([8.0] * 98 + [12.0, 12.0]))  # 12x
    reps = [Repetition(raw, quick, slow, "hop a 1 / 2 ms")]
    rows = {r.name: r for r in target_rows(500, 100, reps)}
    alert = rows["latency p99: HTTP ingest → alert vs raw Kafka"]
    research = rows["latency p99: HTTP ingest → research topic vs raw Kafka"]
    assert (alert.ratio, alert.met) == (pytest.approx(8.0), True)
    assert (research.ratio, research.met) == (pytest.approx(12.0), False)
    assert "100 of 100 probes under 500 resources/s in 1 repetitions" in alert.notes
    assert "per hop (record CreateTimes) in the median repetition: hop a 1 / 2 ms" in alert.notes
    assert rows["latency p50: HTTP ingest → alert vs raw Kafka"].target == "(reported)"
    # 10x a raw p99 of 30 ms allows 300 ms, but 250 ms is the ceiling
    over = target_rows(500, 100, [Repetition(_ms(*([30.0] * 100)), _ms(*([260.0] * 100)), [])])
    assert (over[1].ratio, over[1].met) == (pytest.approx(260 / 30), False)
    assert over[-1].met is False
    assert over[-1].notes == "no record arrived in 1 of 1 repetitions"
    # a raw p99 that read 0 is a miss, not a division error
    zero = target_rows(500, 100, [Repetition([0.0] * 100, quick, quick)])
    assert (zero[1].ratio, zero[1].met) == (float("inf"), False)


def test_latency_target_rows_set_each_p99_against_the_raw_p99_just_before_it() -> None:
    # repetition ratios 5x, 40x, 8x: the median is 8x (the third), not median p99 over median raw
    reps = [
        Repetition(_ms(*([10.0] * 100)), _ms(*([50.0] * 100)), _ms(*([50.0] * 100)), "a"),
        Repetition(_ms(*([1.0] * 100)), _ms(*([40.0] * 100)), _ms(*([40.0] * 100)), "b"),
        Repetition(_ms(*([9.0] * 100)), _ms(*([72.0] * 100)), _ms(*([72.0] * 100)), "c"),
    ]
    rows = {r.name: r for r in target_rows(555, 100, reps)}
    alert = rows["latency p99: HTTP ingest → alert vs raw Kafka"]
    assert (alert.value, alert.baseline) == (pytest.approx(72.0), pytest.approx(9.0))
    assert (alert.ratio, alert.met) == (pytest.approx(8.0), True)
    assert alert.samples == [pytest.approx(5.0), pytest.approx(40.0), pytest.approx(8.0)]
    assert "300 of 300 probes under 555 resources/s in 3 repetitions" in alert.notes
    assert "72 / 9.00 ms (8.0x)" in alert.notes
    assert alert.notes.endswith("in the median repetition: c")
    # a repetition where nothing came through fails the row, whatever the others measured
    reps[1].studies = []
    research = {r.name: r for r in target_rows(555, 100, reps)}[
        "latency p99: HTTP ingest → research topic vs raw Kafka"
    ]
    assert (research.met, research.notes) == (False, "no record arrived in 1 of 3 repetitions")


def test_backlog_rows_take_the_median_drain_and_the_highest_peak_rss() -> None:
    runs = [
        BacklogRun(7, 9, 230, [450, 480], total=500_040, done=500_040),
        BacklogRun(6, 9, 210, [440, 520], total=500_040, done=500_040),
        BacklogRun(7, 8, 250, [430, 470], total=500_040, done=500_040),
    ]
    time_row, rss_row = backlog_rows(500_000, 2, 600, runs)
    assert (time_row.value, time_row.ratio, time_row.met) == (230, pytest.approx(230 / 600), True)
    assert "each repetition's time to drain: 230 s, 210 s, 250 s" in time_row.notes
    assert rss_row.value == 520
    # a repetition cut at its timeout is a miss even when the median drained in time
    runs[2] = BacklogRun(7, 8, 700, [430, 470], drained=False, done=400_000, total=500_040)
    time_row, _ = backlog_rows(500_000, 2, 600, runs)
    assert time_row.met is False
    assert "NOT drained within 600 s: 400000 of 500040 resources" in time_row.notes


def test_light_load_rows_are_reported_but_fail_when_nothing_arrived() -> None:
    raw = _ms(*([2.0] * 100))
    rows = light_rows(20, "a process per stage", 50, raw, _ms(*([30.0] * 50)), [], "")
    assert [r.name for r in rows] == [
        "latency p99 at 20 resources/s, a process per stage: HTTP ingest → alert vs raw Kafka",
        "latency p99 at 20 resources/s, a process per stage: HTTP ingest → research topic "
        "vs raw Kafka",
    ]
    assert (rows[0].ratio, rows[0].target, rows[0].met) == (pytest.approx(15.0), "(reported)", True)
    assert "p50 30.0 ms against a raw p50 of 2.00 ms" in rows[0].notes
    assert (rows[1].met, rows[1].notes) == (False, "no record arrived")
