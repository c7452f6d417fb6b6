"""Statistics and the etcd-style summary of the load generator."""

import math

from trietcd.tools.benchmark import report


def test_percentiles_follow_etcds_index_rule():
    lats = [float(i) for i in range(1, 101)]  # 1..100
    stats = report.summarize(lats, {}, total_s=2.0)
    # etcd 3.5: the first index i with i * 100 / n >= p, so p50 -> index 50 -> value 51.
    assert stats.percentile_s(50.0) == 51.0
    assert stats.percentile_s(10.0) == 11.0
    assert stats.percentile_s(99.0) == 100.0
    # No index of 100 reaches 99.9: etcd leaves it 0 and does not print it.
    assert stats.percentile_s(99.9) == 0.0
    assert "99.9%" not in report.format_summary(stats)
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
    # n = 3: 10% -> index 1 (33%), 75% -> index 3, past the end: not printed.
    assert "\nLatency distribution:\n  10% in 0.0020 secs.\n" in text
    assert "  50% in 0.0030 secs.\n" in text
    assert "75%" not in text
    assert "\nError distribution:\n  [2]\trpc error: code = NotFound desc = x\n" in text


def test_no_successes_prints_only_errors():
    stats = report.summarize([], {"down": 5}, 1.0)
    assert stats.requests_per_sec == 0.0
    assert report.format_summary(stats) == "\nError distribution:\n  [5]\tdown\n"
    assert report.to_json_dict(stats)["errors"] == {"down": 5}


def test_a_single_latency_prints_no_percentiles_like_etcd():
    text = report.format_summary(report.summarize([0.5], {}, 1.0))
    assert text.endswith("\nLatency distribution:\n")


def test_precise_prints_full_floats():
    stats = report.summarize([0.000125, 0.25], {}, 2.0)
    text = report.format_summary(stats, precise=True)
    assert "  Fastest:\t0.000125 secs.\n" in text
    assert "  Requests/sec:\t1.0\n" in text


def test_render_json_names_the_report():
    line = report.render(report.summarize([0.1], {}, 1.0), as_json=True, name="read")
    assert line.startswith('{"name": "read", "total_s": 1.0')
