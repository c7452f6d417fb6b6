"""Latency statistics and the summary text of etcd's benchmark tool (etcd 3.5 pkg/report)."""

from __future__ import annotations

import json
import math

import attrs

__all__ = ["PERCENTILES", "Stats", "summarize", "format_summary", "to_json_dict", "render"]

PERCENTILES = (10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)


@attrs.frozen
class Stats:
    total_s: float
    calls_ok: int
    calls_failed: int
    fastest_s: float
    slowest_s: float
    average_s: float
    stddev_s: float
    requests_per_sec: float
    percentiles_s: tuple[tuple[float, float], ...]  # (percent, latency seconds)
    histogram: tuple[tuple[float, int], ...]  # (bucket upper bound seconds, count)
    errors: tuple[tuple[str, int], ...]  # (error text, count), most frequent first
    client_cpu_s: float = 0.0  # CPU time the load generator itself used, all processes

    def percentile_s(self, percent: float) -> float:
        for p, value in self.percentiles_s:
            if p == percent:
                return value
        raise KeyError(percent)


def _percentiles(sorted_lats: list[float]) -> tuple[tuple[float, float], ...]:
    # etcd 3.5's rule: the first latency at index i with i * 100 / n >= p.
    # A percentile no index reaches stays 0 and is left out of the text.
    n = len(sorted_lats)
    out = []
    for p in PERCENTILES:
        index = max(math.ceil(p * n / 100.0) - 1, 0)
        while index < n and index * 100.0 / n < p:
            index += 1
        out.append((p, sorted_lats[index] if index < n else 0.0))
    return tuple(out)


def _histogram(sorted_lats: list[float], buckets_n: int = 10) -> tuple[tuple[float, int], ...]:
    if not sorted_lats:
        return ()
    fastest, slowest = sorted_lats[0], sorted_lats[-1]
    width = (slowest - fastest) / buckets_n
    bounds = [fastest + width * i for i in range(buckets_n)] + [slowest]
    counts = [0] * len(bounds)
    bucket = 0
    for value in sorted_lats:
        while value > bounds[bucket] and bucket < len(bounds) - 1:
            bucket += 1
        counts[bucket] += 1
    return tuple(zip(bounds, counts))


def summarize(
    lats: list[float], errors: dict[str, int], total_s: float, client_cpu_s: float = 0.0
) -> Stats:
    """Stats over the latencies of successful calls; `lats` gets sorted in place."""
    lats.sort()
    n = len(lats)
    average = sum(lats) / n if n else 0.0
    stddev = math.sqrt(sum((x - average) ** 2 for x in lats) / n) if n else 0.0
    return Stats(
        total_s=total_s,
        calls_ok=n,
        calls_failed=sum(errors.values()),
        fastest_s=lats[0] if n else 0.0,
        slowest_s=lats[-1] if n else 0.0,
        average_s=average,
        stddev_s=stddev,
        requests_per_sec=n / total_s if total_s > 0 else 0.0,
        percentiles_s=_percentiles(lats),
        histogram=_histogram(lats),
        errors=tuple(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
        client_cpu_s=client_cpu_s,
    )


def _number(value: float, precise: bool) -> str:
    # etcd prints "%4.4f", or "%g" with --precise (Go's shortest form).
    return repr(float(value)) if precise else f"{value:4.4f}"


def format_summary(stats: Stats, precise: bool = False) -> str:
    """etcd benchmark's text: Summary, histogram, latency distribution, errors."""
    lines = []
    f = lambda value: _number(value, precise)  # noqa: E731
    if stats.calls_ok:
        lines += [
            "",
            "Summary:",
            f"  Total:\t{f(stats.total_s)} secs.",
            f"  Slowest:\t{f(stats.slowest_s)} secs.",
            f"  Fastest:\t{f(stats.fastest_s)} secs.",
            f"  Average:\t{f(stats.average_s)} secs.",
            f"  Stddev:\t{f(stats.stddev_s)} secs.",
            f"  Requests/sec:\t{f(stats.requests_per_sec)}",
            "",
            "Response time histogram:",
        ]
        most = max(count for _, count in stats.histogram)
        for bound, count in stats.histogram:
            bar = "\u220e" * (count * 40 // most if most else 0)
            lines.append(f"  {f(bound)} [{count}]\t|{bar}")
        lines += ["", "Latency distribution:"]
        for percent, value in stats.percentiles_s:
            if value > 0:
                lines.append(f"  {percent:g}% in {f(value)} secs.")
    if stats.errors:
        lines += ["", "Error distribution:"]
        for text, count in stats.errors:
            lines.append(f"  [{count}]\t{text}")
    return "\n".join(lines) + "\n"


def to_json_dict(stats: Stats) -> dict:
    return {
        "total_s": stats.total_s,
        "calls_ok": stats.calls_ok,
        "calls_failed": stats.calls_failed,
        "slowest_s": stats.slowest_s,
        "fastest_s": stats.fastest_s,
        "average_s": stats.average_s,
        "stddev_s": stats.stddev_s,
        "requests_per_sec": stats.requests_per_sec,
        "percentiles_s": {f"{p:g}": value for p, value in stats.percentiles_s},
        "errors": dict(stats.errors),
        "client_cpu_s": stats.client_cpu_s,
    }


def render(stats: Stats, *, as_json: bool = False, precise: bool = False, name: str = "") -> str:
    """etcd's summary text, or one JSON line (with `name` when a command prints several)."""
    if not as_json:
        return format_summary(stats, precise)
    body = to_json_dict(stats)
    if name:
        body = {"name": name, **body}
    return json.dumps(body) + "\n"
