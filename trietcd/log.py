"""Structured logs in etcd's shape: one JSON object per line on stderr.

etcd logs through zap with the JSON encoder; operators grep and parse those
lines, so trietcd writes the same keys: level, ts (RFC 3339 with
milliseconds, UTC), caller, msg, then the fields of the call in order.
Durations are written as zap's string encoder writes them (`go_duration`).
Each line goes to every output of --log-outputs, in order.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import sys
import time
from typing import Any, ClassVar, TextIO

__all__ = ["LEVELS", "Logger", "RotatingFile", "bridge_stdlib_logging", "go_duration", "logger"]

LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3, "dpanic": 4, "panic": 5, "fatal": 6}


def go_duration(ns: int) -> str:
    """A duration as zap's string encoder writes it (Go's Duration.String): "1.5ms", "12h0m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(int(ns))
    if ns < 1_000_000_000:
        for unit, name in ((1, "ns"), (1_000, "\u00b5s"), (1_000_000, "ms")):
            if ns < unit * 1000:
                return sign + _decimal(ns, unit) + name
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _decimal(rest, 1_000_000_000) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    return f"{whole}." + str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")


class Logger:
    def __init__(self, *, level: str = "info", out: TextIO | None = None, name: str = "") -> None:
        self.set_level(level)
        self._outs: tuple[TextIO, ...] = (out,) if out is not None else ()  # () means stderr
        self._name = name

    def named(self, name: str) -> Logger:
        child = Logger(level=self.level, name=name)
        child._outs = self._outs
        return child

    def set_level(self, level: str) -> None:
        """zap's level names, in either case ("" is info, as zap reads it)."""
        level = level.lower() or "info"
        self._threshold = LEVELS[level]
        self.level = level

    def set_output(self, out: TextIO | None) -> None:
        """One output (None: stderr)."""
        self._outs = (out,) if out is not None else ()

    @property
    def _out(self) -> TextIO | None:
        # The single output, as tests save it before set_output and restore it after.
        return self._outs[0] if self._outs else None

    @property
    def outputs(self) -> tuple[TextIO, ...]:
        return self._outs or (sys.stderr,)

    def set_outputs(self, outs) -> None:
        """Every line goes to each of `outs` (etcd's --log-outputs with several entries)."""
        self._outs = tuple(outs)

    def log(self, level: str, msg: str, caller: str = "", **fields: Any) -> None:
        if LEVELS[level] < self._threshold:
            return
        now = datetime.datetime.now(datetime.UTC)
        record: dict[str, Any] = {
            "level": level,
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
        }
        if self._name:
            record["logger"] = self._name
        if caller:
            record["caller"] = caller
        record["msg"] = msg
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        for out in self._outs or (sys.stderr,):
            out.write(line)
            out.flush()

    def debug(self, msg: str, **fields: Any) -> None:
        self.log("debug", msg, **fields)

    def info(self, msg: str, **fields: Any) -> None:
        self.log("info", msg, **fields)

    def warn(self, msg: str, **fields: Any) -> None:
        self.log("warn", msg, **fields)

    def error(self, msg: str, **fields: Any) -> None:
        self.log("error", msg, **fields)


# The process-wide logger; cli.main sets its level from --log-level.
logger = Logger()


class _StdlibBridge:
    """Routes records of the standard `logging` module (used by the transport)
    into etcd-shaped JSON lines."""

    _LEVELS: ClassVar = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error", "CRITICAL": "error"}

    def __init__(self, target: Logger) -> None:
        import logging

        class Handler(logging.Handler):
            def emit(handler_self, record: logging.LogRecord) -> None:
                fields: dict[str, Any] = {}
                if record.exc_info and record.exc_info[1] is not None:
                    fields["error"] = repr(record.exc_info[1])
                    if target.level == "debug":
                        fields["stacktrace"] = logging.Formatter().formatException(record.exc_info)
                target.log(
                    self._LEVELS.get(record.levelname, "info"),
                    record.getMessage(),
                    caller=f"{record.module}.py:{record.lineno}",
                    **fields,
                )

        self.handler = Handler()


def bridge_stdlib_logging(target: Logger | None = None) -> None:
    import logging

    target = target or logger
    root = logging.getLogger("trietcd")
    root.handlers[:] = [_StdlibBridge(target).handler]
    root.setLevel(logging.DEBUG if target.level == "debug" else logging.INFO)
    root.propagate = False


class RotatingFile:
    """A log file rotated as etcd's --enable-log-rotation does it (lumberjack, configured by
    --log-rotation-config-json): when a line would take the file past `maxsize` MB (default 100) it is
    renamed to `<name>-<time>.<ext>` (time as 2006-01-02T15-04-05.000, UTC unless `localtime`), gzipped when
    `compress`, and a new file is started; backups beyond `maxbackups` (0: all kept) or older than `maxage`
    days (0: any age) are removed."""

    def __init__(self, path: str, config: dict | None = None, *, now=time.time) -> None:
        cfg = {k.lower(): v for k, v in (config or {}).items()}
        self.path = path
        self.max_bytes = (cfg.get("maxsize") or 100) * 1024 * 1024
        self.max_age_s = (cfg.get("maxage") or 0) * 86400
        self.max_backups = cfg.get("maxbackups") or 0
        self.localtime = bool(cfg.get("localtime"))
        self.compress = bool(cfg.get("compress"))
        self._now = now
        self._file = open(path, "a", buffering=1)
        self._size = self._file.tell()

    def write(self, text: str) -> int:
        data_len = len(text.encode())
        if self._size and self._size + data_len > self.max_bytes:
            self._rotate()
        self._size += data_len
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def _backup_name(self) -> str:
        now = self._now()
        t = datetime.datetime.fromtimestamp(now) if self.localtime else datetime.datetime.fromtimestamp(now, datetime.UTC)
        stamp = t.strftime("%Y-%m-%dT%H-%M-%S.") + f"{t.microsecond // 1000:03d}"
        directory, name = os.path.split(self.path)
        stem, ext = os.path.splitext(name)
        return os.path.join(directory, f"{stem}-{stamp}{ext}")

    def _rotate(self) -> None:
        self._file.close()
        backup = self._backup_name()
        os.replace(self.path, backup)
        if self.compress:
            with open(backup, "rb") as src, gzip.open(backup + ".gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.remove(backup)
        self._file = open(self.path, "a", buffering=1)
        self._size = 0
        self._remove_old_backups()

    def _backups(self) -> list[tuple[float, str]]:
        directory, name = os.path.split(self.path)
        stem, ext = os.path.splitext(name)
        out = []
        for entry in os.listdir(directory or "."):
            base = entry[:-3] if entry.endswith(".gz") else entry
            if base.startswith(stem + "-") and base.endswith(ext) and entry != name:
                stamp = base[len(stem) + 1:len(base) - len(ext)]
                try:
                    t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H-%M-%S.%f")
                except ValueError:
                    continue
                if not self.localtime:
                    t = t.replace(tzinfo=datetime.UTC)
                out.append((t.timestamp(), os.path.join(directory, entry)))
        return sorted(out, reverse=True)

    def _remove_old_backups(self) -> None:
        backups = self._backups()
        doomed = set()
        if self.max_backups > 0:
            doomed.update(path for _, path in backups[self.max_backups:])
        if self.max_age_s > 0:
            cutoff = self._now() - self.max_age_s
            doomed.update(path for t, path in backups if t < cutoff)
        for path in doomed:
            try:
                os.remove(path)
            except OSError:
                pass
