"""`trietcdutl`: etcdutl 3.5.1 for trietcd and etcd data dirs and snapshot files.

Modules: `cli` (commands, flags, outputs), `snapshot` (status, restore), `defrag`, `backup`, `console` (log
lines, sizes, tables).
"""

from .cli import main

__all__ = ["main"]
