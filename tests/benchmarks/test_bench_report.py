"""Statistics and the etcd-style summary of the load generator."""

import math

from benchmarks import report


def test_percentiles_follow_etcds_index_rule():
    lats = [float(i) for i in range(1, 101)]  # 1..100
    stats = report.summarize(lats, {}, total_s=2.0)
    # index = ceil(p * 101 / 100) - 1, so p50 -> index 50 -> value 51.
    assert stats.percentile_s(50.0) == 51.0
    assert stats.percentile_s(10.0) == 11.0
    assert stats.percentile_s(99.9) == 100.0
    assert stats.fastest_s == 1.0 and stats.slowest_s == 100.0
    assert stats.average_s == 50.5
    assert math.isclose(stats.stddev_s, math.sqrt(sum((x - 50.5) ** 2 for x in lats) / 100))
    assert stats.requests_per_sec == 50.0
    assert sum(count for _, count in stats.histogram) == 100


def test_errors_do_not_count_as_requests_per_second():
    stats = report.summarize([0.5, 0.25], {"boom": 3, "bang": 1}, total_s=1.0)
    assert stats.calls_ok == 2 and stats.calls_failed == 4
    assert stats.requests_per_sec == 2.0
    assert stats.errors == (("boom", 3), ("bang", 1))


def test_summary_text_has_etcds_sections():
    stats = report.summarize([0.001, 0.002, 0.003], {"rpc error: code = NotFound desc = x": 2}, 1.5)
    text = report.format_summary(stats)
    assert "\nSummary:\n  Total:\t1.5000 secs.\n" in text
    assert "  Requests/sec:\t2.0000\n" in text
    assert "\nLatency distribution:\n  10% in 0.0010 secs.\n" in text
    assert "  99.9% in 0.0030 secs.\n" in text
    assert "\nError distribution:\n  [2]\trpc error: code = NotFound desc = x\n" in text


def test_no_successes_prints_only_errors():
    stats = report.summarize([], {"down": 5}, 1.0)
    assert stats.requests_per_sec == 0.0
    assert report.format_summary(stats) == "\nError distribution:\n  [5]\tdown\n"
    assert report.to_json_dict(stats)["errors"] == {"down": 5}
