"""Side by side: real etcd 3.5.1 and trietcd, same scenarios, same run, same machine.

    python -m benchmarks.compare                    # etcd vs trietcd, every scenario
    python -m benchmarks.compare --reference-only   # etcd vs a second etcd: the method's fairness
    python -m benchmarks.compare --scale 0.2 --only put-1-1,range-l-1-1

Both servers are started here with fresh data dirs under one directory
(/tmp/compare/run-*, so the same filesystem), free loopback ports and etcd's
flags; trietcd runs as `python -m trietcd` with the same flags. Every
scenario is a `trietcd-benchmark` command line (the one printed in the table
notes), run against each server in turn, etcd first (`--repeat N`: N
alternating rounds, the fastest run of each server kept); while it runs, the
server's CPU time and peak RSS are sampled from /proc. A scenario a server
cannot serve shows as "n/a" with the first error, never hidden.

The Markdown table goes to stdout and is appended, with the date, the
machine (nproc, CPU model, load) and both versions, to
benchmarks/results/<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import attrs

from benchmarks.unary_noop import _etcd_bin_dir, _etcd_style_argv, _repo_root, _stop, _wait_serving, free_port

__all__ = ["SCENARIOS", "Scenario", "Measurement", "format_table", "main"]

WORK_DIR = "/tmp/compare"
RESULTS_DIR = os.path.join(_repo_root(), "benchmarks", "results")


@attrs.frozen
class Scenario:
    name: str
    argv: tuple[str, ...]  # trietcd-benchmark arguments after --endpoints
    total: int  # calls (or puts) at --scale 1
    unit: str = "req/s"
    summary: str = ""  # for commands printing several summaries: the one to report


LATENCY = "p50 / p99 ms"
_PUT = ("put", "--key-size=8", "--val-size=256", "--sequential-keys")

# etcd's performance-doc set (put and range at 1/1 and 100 conns / 1000
# clients), plus watch fan-out and lease keep-alive.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("put-1-1", ("--conns=1", "--clients=1", *_PUT), 10000),
    Scenario("put-10-100", ("--conns=10", "--clients=100", *_PUT), 50000),
    Scenario("put-100-1000", ("--conns=100", "--clients=1000", *_PUT), 100000),
    Scenario("range-l-1-1", ("--conns=1", "--clients=1", "range", "foo", "--consistency=l"), 10000),
    Scenario("range-l-100-1000", ("--conns=100", "--clients=1000", "range", "foo", "--consistency=l"), 100000),
    Scenario("range-s-1-1", ("--conns=1", "--clients=1", "range", "foo", "--consistency=s"), 10000),
    Scenario("range-s-100-1000", ("--conns=100", "--clients=1000", "range", "foo", "--consistency=s"), 100000),
    Scenario(
        "watch-fanout-1000",
        ("--conns=10", "--clients=10", "watch", "--streams=100", "--watch-per-stream=10",
         "--watched-key-total=1"),
        1000, unit="events/s", summary="Watch events received summary",
    ),
    Scenario("lease-keepalive-10-100", ("--conns=10", "--clients=100", "lease-keepalive"), 50000),
    # Put-to-event latency at 100 watchers of one key (10 streams), 200 puts/s: the figure is the
    # latency, reported as "p50 / p99 ms"; the ratio column compares p99s.
    Scenario("watch-latency-100", ("--conns=10", "--clients=100", "watch-latency", "--put-rate=200"), 2000,
             unit=LATENCY),
)


@attrs.frozen
class Measurement:
    rate: float | None  # None: not served
    p99_s: float = 0.0
    p50_s: float = 0.0
    failed: int = 0
    reason: str = ""
    server_cpu_s: float = 0.0
    server_rss_max_bytes: int = 0
    wall_s: float = 0.0


def scenario_argv(scenario: Scenario, endpoint: str, scale: float) -> list[str]:
    total = max(1, int(scenario.total * scale))
    args = list(scenario.argv)
    flag = "--put-total" if "watch" in args else "--total"
    return [f"--endpoints={endpoint}", "--no-progress", "--json", *args, f"{flag}={total}"]


class ProcSampler:
    """CPU time and peak RSS of one process, from /proc, while a scenario runs."""

    def __init__(self, pid: int, interval_s: float = 0.1):
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.rss_max_bytes = 0
        self._cpu_start = self._cpu_s()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _cpu_s(self) -> float:
        try:
            with open(f"/proc/{self._pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def _rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self._pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _run(self) -> None:
        while True:
            self.rss_max_bytes = max(self.rss_max_bytes, self._rss_bytes())
            if self._stop.wait(self._interval_s):
                return

    def stop(self) -> float:
        """Stops sampling; returns the CPU seconds used since the start."""
        self._stop.set()
        self._thread.join()
        self.rss_max_bytes = max(self.rss_max_bytes, self._rss_bytes())
        return self._cpu_s() - self._cpu_start


def _pick(lines: list[dict], scenario: Scenario) -> dict | None:
    for line in lines:
        if not scenario.summary or line.get("name") == scenario.summary:
            return line
    return None


def measure(scenario: Scenario, endpoint: str, pid: int, args: argparse.Namespace) -> Measurement:
    argv = [sys.executable, "-m", "trietcd.tools.benchmark", *scenario_argv(scenario, endpoint, args.scale)]
    sampler = ProcSampler(pid)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout, cwd=_repo_root())
        out, err, code = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, err, code = "", f"timed out after {args.timeout:g}s", -1
        del exc
    wall_s = time.monotonic() - started
    cpu_s = sampler.stop()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    summary = _pick(lines, scenario)
    common = dict(server_cpu_s=cpu_s, server_rss_max_bytes=sampler.rss_max_bytes, wall_s=wall_s)
    if code != 0 or summary is None:
        reason = (err.strip().splitlines() or [f"exit status {code}"])[-1]
        return Measurement(None, reason=reason, **common)
    if summary["calls_ok"] == 0:
        reason = next(iter(summary["errors"]), "no call succeeded")
        return Measurement(None, failed=summary["calls_failed"], reason=reason, **common)
    return Measurement(
        summary["requests_per_sec"], p99_s=summary["percentiles_s"]["99"], p50_s=summary["percentiles_s"]["50"],
        failed=summary["calls_failed"], **common,
    )


def best(measurements, unit: str = "") -> Measurement:
    """On a shared machine other work only ever slows a run down: keep the fastest (the lowest p99
    for a latency scenario)."""
    if unit == LATENCY:
        return min(measurements, key=lambda m: (m.rate is None, m.p99_s))
    return max(measurements, key=lambda m: (m.rate is not None, m.rate or 0.0))


# ---- servers ---------------------------------------------------------------------


@attrs.frozen
class Server:
    name: str
    endpoint: str
    pid: int


class Servers(contextlib.ExitStack):
    def __enter__(self):
        super().__enter__()
        os.makedirs(WORK_DIR, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="run-", dir=WORK_DIR)
        self.callback(shutil.rmtree, self.dir, True)
        return self

    def start(self, name: str, command: list[str]) -> Server:
        port = free_port()
        # etcd's flags after the whole command ("python -m trietcd" or the etcd binary).
        argv = _etcd_style_argv(command[-1], os.path.join(self.dir, f"{name}.data"), port, free_port())
        argv = [*command[:-1], *argv]
        log_path = os.path.join(self.dir, f"{name}.log")
        log = self.enter_context(open(log_path, "wb"))
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.callback(_stop, proc)
        endpoint = f"127.0.0.1:{port}"
        try:
            _wait_serving(endpoint, proc)
        except RuntimeError as exc:
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{name}: {exc}; its output ends with:\n{tail}") from None
        return Server(name, endpoint, proc.pid)


def etcd_command() -> list[str]:
    return [os.path.join(_etcd_bin_dir(), "etcd")]


def trietcd_command() -> list[str]:
    return [sys.executable, "-m", "trietcd"]


# ---- the table and the results file ------------------------------------------------


def _rate(m: Measurement, unit: str) -> str:
    if m.rate is None:
        return f"n/a ({m.reason})"
    text = f"{m.p50_s * 1e3:.2f} / {m.p99_s * 1e3:.2f}" if unit == LATENCY else f"{m.rate:,.0f}"
    if m.failed:
        text += f" ({m.failed} failed)"
    return text


def _server(m: Measurement) -> str:
    return f"{m.server_cpu_s:.1f} s / {m.server_rss_max_bytes / 2**20:.0f} MiB"


def format_table(names: tuple[str, str], rows: list[tuple[Scenario, Measurement, Measurement]]) -> str:
    a, b = names
    head = [
        "scenario", "unit", a, b, f"{b}/{a}", f"{a} p50 / p99 ms", f"{b} p50 / p99 ms",
        f"{a} CPU / RSS", f"{b} CPU / RSS",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for scenario, first, second in rows:
        ratio = "-"
        if scenario.unit == LATENCY:
            if first.p99_s and second.rate is not None:
                ratio = f"{second.p99_s / first.p99_s:.2f}"
        elif first.rate and second.rate is not None:
            ratio = f"{second.rate / first.rate:.2f}"
        p99 = lambda m: "-" if m.rate is None or scenario.unit != "req/s" else \
            f"{m.p50_s * 1e3:.2f} / {m.p99_s * 1e3:.2f}"  # noqa: E731
        cells = [
            scenario.name, scenario.unit, _rate(first, scenario.unit), _rate(second, scenario.unit), ratio,
            p99(first), p99(second), _server(first), _server(second),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def machine() -> dict[str, str]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {"nproc": str(os.cpu_count()), "cpu": model, "load": load, "python": platform.python_version()}


def versions() -> dict[str, str]:
    etcd = subprocess.run([*etcd_command(), "--version"], capture_output=True, text=True).stdout
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=_repo_root()
    ).stdout.strip()
    import trietcd

    return {
        "etcd": etcd.splitlines()[0].partition(":")[2].strip() if etcd else "?",
        "trietcd": f"{trietcd.__version__} (git {commit or '?'})",
    }


def report_text(names, rows, args, before: dict, after: dict) -> str:
    v = versions()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## {now}: {names[0]} vs {names[1]}",
        "",
        f"- machine: nproc {before['nproc']}, {before['cpu']}; load average {before['load']} before, "
        f"{after['load']} after (shared machine)",
        f"- etcd {v['etcd']}, trietcd {v['trietcd']}, Python {before['python']}",
        f"- `python -m benchmarks.compare {' '.join(args.argv)}`".rstrip()
        + f" (scale {args.scale:g}, best of {args.repeat} alternating runs)",
        "- each scenario: `trietcd-benchmark --endpoints=... <scenario flags> --total=N`:",
    ]
    for scenario, _, _ in rows:
        flags = " ".join(scenario_argv(scenario, "...", args.scale)[3:])
        lines.append(f"  - {scenario.name}: `{flags}`")
    lines += ["", format_table(names, rows)]
    return "\n".join(lines)


def append_results(text: str) -> str:
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, datetime.date.today().isoformat() + ".md")
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write("# Side-by-side benchmark results\n\n")
        f.write(text + "\n")
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    parser.add_argument("--reference-only", action="store_true", help="etcd against a second etcd")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's total")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per scenario and server, alternating; the fastest is kept")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per scenario run")
    parser.add_argument("--no-save", action="store_true", help="do not append to benchmarks/results/")
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def selected(args: argparse.Namespace) -> list[Scenario]:
    if not args.only:
        return list(SCENARIOS)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    known = {s.name: s for s in SCENARIOS}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; known: {', '.join(known)}")
    return [known[name] for name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    scenarios = selected(args)
    before = machine()
    second = ("etcd-2", etcd_command()) if args.reference_only else ("trietcd", trietcd_command())
    rows = []
    with Servers() as servers:
        a = servers.start("etcd", etcd_command())
        b = servers.start(*second)
        for scenario in scenarios:
            runs = [
                (measure(scenario, a.endpoint, a.pid, args), measure(scenario, b.endpoint, b.pid, args))
                for _ in range(args.repeat)
            ]
            first = best((m for m, _ in runs), scenario.unit)
            other = best((m for _, m in runs), scenario.unit)
            rows.append((scenario, first, other))
            print(
                f"# {scenario.name}: {a.name} {_rate(first, scenario.unit)}, {b.name} {_rate(other, scenario.unit)}",
                file=sys.stderr, flush=True,
            )
    names = (a.name, b.name)
    text = report_text(names, rows, args, before, machine())
    sys.stdout.write(text)
    if not args.no_save:
        print(f"# appended to {append_results(text)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
