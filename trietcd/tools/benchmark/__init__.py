"""`trietcd-benchmark`: etcd's benchmark tool for any etcd-compatible endpoint.

An independent client: it imports nothing from the rest of trietcd (its own
HTTP/2 client core and protobuf encoding), so a bug in the server's codec
cannot hide itself by agreeing with itself.
"""

from trietcd.tools.benchmark.cli import main
from trietcd.tools.benchmark.load import LoadConfig, Workload, run_load
from trietcd.tools.benchmark.report import Stats, format_summary, summarize

__all__ = ["main", "LoadConfig", "Workload", "run_load", "Stats", "format_summary", "summarize"]
