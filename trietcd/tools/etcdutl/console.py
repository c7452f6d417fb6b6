"""etcdutl's output: zap's console log lines on stderr, go-humanize sizes (the backend's), tablewriter tables."""

from __future__ import annotations

import json
import sys
import time

from trietcd.backend import humanize_bytes

__all__ = ["ConsoleLog", "humanize_bytes", "table"]


class ConsoleLog:
    """Lines as etcdutl's zap console encoder writes them: time, level, caller, message, JSON fields."""

    def __init__(self, out=None, clock=time.time) -> None:
        self._out = out if out is not None else sys.stderr
        self._clock = clock

    def _line(self, level: str, caller: str, msg: str, fields: dict) -> None:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        parts = [ts, level, caller, msg]
        if fields:
            parts.append(json.dumps(fields, ensure_ascii=False))
        self._out.write("\t".join(parts) + "\n")
        self._out.flush()

    def info(self, caller: str, msg: str, fields: dict) -> None:
        self._line("info", caller, msg, fields)

    def warn(self, caller: str, msg: str, fields: dict) -> None:
        self._line("warn", caller, msg, fields)

    def fatal(self, caller: str, msg: str, fields: dict) -> None:
        self._line("fatal", caller, msg, fields)


def table(header: list[str], rows: list[list[str]]) -> str:
    """etcdctl's tablewriter table: upper-case centred header, right-aligned cells."""
    header = [h.upper() for h in header]
    widths = [max(len(c) for c in col) for col in zip(header, *rows)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def centre(text: str, w: int) -> str:
        gap = w - len(text)
        return " " * (gap // 2) + text + " " * (gap - gap // 2)

    lines = [rule, "| " + " | ".join(centre(h, w) for h, w in zip(header, widths)) + " |", rule]
    for row in rows:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |")
    lines.append(rule)
    return "\n".join(lines)
