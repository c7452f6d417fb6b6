"""The pieces of Go's `encoding/json` (Go 1.16, as etcd 3.5.1 is built) that the v2 store needs.

Strings are escaped as `trietcd.gojson` does (Go's `json.Marshal`, HTML escaping on).

`time.Time` values are written as RFC 3339 with nanoseconds, trailing zeros of the fraction
dropped, `Z` for a zero offset; a `GoTime` keeps the instant and the offset it was written with,
so a time read from etcd's JSON is written back unchanged.
"""

from __future__ import annotations

import re

import attrs

from trietcd.gojson import go_string, go_string_list

__all__ = [
    "ZERO_TIME_TEXT",
    "ZERO_TIME_UNIX_NS",
    "GoTime",
    "format_time",
    "go_string",
    "go_string_list",
    "parse_time",
]

ZERO_TIME_TEXT = "0001-01-01T00:00:00Z"  # Go's zero time.Time (a permanent node's ExpireTime)

_NS_PER_S = 1_000_000_000
_SECONDS_PER_DAY = 86_400


@attrs.frozen
class GoTime:
    """A Go `time.Time`: the instant in Unix nanoseconds and the zone offset it prints with."""

    unix_ns: int
    offset_s: int = 0

    def text(self) -> str:
        return format_time(self)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """Inverse of `_days_from_civil`."""
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


ZERO_TIME_UNIX_NS = _days_from_civil(1, 1, 1) * _SECONDS_PER_DAY * _NS_PER_S


def format_time(t: GoTime) -> str:
    """RFC3339Nano, as `time.Time.MarshalJSON` writes it (without the quotes)."""
    local_ns = t.unix_ns + t.offset_s * _NS_PER_S
    seconds, frac_ns = divmod(local_ns, _NS_PER_S)
    days, second_of_day = divmod(seconds, _SECONDS_PER_DAY)
    year, month, day = _civil_from_days(days)
    hh, rest = divmod(second_of_day, 3600)
    mm, ss = divmod(rest, 60)
    out = f"{year:04d}-{month:02d}-{day:02d}T{hh:02d}:{mm:02d}:{ss:02d}"
    if frac_ns:
        out += "." + f"{frac_ns:09d}".rstrip("0")
    if t.offset_s == 0:
        return out + "Z"
    sign = "+" if t.offset_s > 0 else "-"
    off_min = abs(t.offset_s) // 60
    return out + f"{sign}{off_min // 60:02d}:{off_min % 60:02d}"


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})")


def parse_time(text: str) -> GoTime:
    """Inverse of `format_time`; ValueError on text Go's RFC 3339 parser would refuse."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hh, mm, ss = (int(g) for g in m.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)
            and hh <= 23 and mm <= 59 and ss <= 59):
        raise ValueError(f"time out of range: {text!r}")
    frac = m.group(7) or ""
    frac_ns = int(frac.ljust(9, "0")) if frac else 0
    zone = m.group(8)
    offset_s = 0
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        zh, zm = int(zone[1:3]), int(zone[4:6])
        if zh > 23 or zm > 59:
            raise ValueError(f"time zone offset out of range: {text!r}")
        offset_s = sign * (zh * 3600 + zm * 60)
    local_s = _days_from_civil(year, month, day) * _SECONDS_PER_DAY + hh * 3600 + mm * 60 + ss
    return GoTime((local_s - offset_s) * _NS_PER_S + frac_ns, offset_s)
