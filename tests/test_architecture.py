"""The layer rules of DESIGN.md, checked on the source (ast, nothing is imported).

1. A module imports only its own layer and the layers below it:

       storage < proto < wal < raft < {mvcc, backend, v2store, lease, auth} < server
               < wire < api < peer < {cli, config} < tools

   `storage/` knows nothing of etcd or trietcd. `trietcd/wire/` serves any
   gRPC service, so from trietcd it imports only itself, the package metadata
   (`import trietcd`) and the utilities, and nothing from `proto/`.
   `trietcd/log.py`, `trietcd/metrics.py` and `trietcd/gojson.py` are
   utilities any trietcd layer may import; they import no layer themselves.
2. The sans-IO cores listed in CORES never touch trio, the clock, global
   randomness, sockets or files, never await, and import only other cores.
3. Every package's `__init__.py` defines `__all__`, and every name in it exists.

Imports inside functions and under `if TYPE_CHECKING:` count like the others:
a dependency is a dependency. A layer whose directory does not exist yet has
no modules to check; its rules are already here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_PACKAGES = ("storage", "proto", "trietcd")

# (rank, module prefixes). Equal rank: may import each other.
LAYERS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (0, ("storage",)),
    (1, ("proto",)),
    (2, ("trietcd.wal",)),
    (3, ("trietcd.raft",)),
    (4, ("trietcd.mvcc", "trietcd.backend", "trietcd.v2store", "trietcd.lease", "trietcd.auth")),
    (5, ("trietcd.server",)),
    (6, ("trietcd.wire",)),
    (7, ("trietcd.api",)),
    (8, ("trietcd.peer",)),
    (9, ("trietcd.cli", "trietcd.config", "trietcd.__main__", "trietcd.embed", "trietcd.testing")),
    # Client programs (benchmark, ...), like etcd's tools/: above the server,
    # which never imports them. Not yet a row of DESIGN.md's table.
    (10, ("trietcd.tools",)),
)
METADATA = "trietcd"  # trietcd/__init__.py: version strings, and trietcd.serve loaded from EMBED
EMBED = "trietcd.embed"
UTILITIES = ("trietcd.log", "trietcd.metrics", "trietcd.gojson", "trietcd.config.gotypes")
# Utilities that are sans-IO themselves, so cores may import them too. gotypes is Go's strconv, time and
# net/url parsing (flags, and the peer URLs of a member change).
PURE_UTILITIES = ("trietcd.gojson", "trietcd.config.gotypes")

# Sans-IO cores (DESIGN.md "Layers", STYLE.md "Layout": the modules left of
# the `|`). Globs are relative to ROOT; entries that match nothing yet are
# modules still to be written. A module that stops being pure moves its IO
# into a shell module; it does not leave this list.
CORES: tuple[str, ...] = (
    # page file (storage/file.py is the shell)
    "storage/page.py", "storage/meta.py", "storage/node.py", "storage/freelist.py",
    "storage/bucket.py", "storage/cursor.py", "storage/tx.py", "storage/check.py",
    # write-ahead log codecs (wal/segment.py is the shell)
    "trietcd/wal/record.py", "trietcd/wal/snap.py",
    # consensus: all of it; the member drives it
    "trietcd/raft/*.py",
    # store
    "trietcd/mvcc/*.py",
    "trietcd/backend/schema.py", "trietcd/backend/batch.py",
    "trietcd/v2store/*.py",
    # leases (trietcd/server/lessor.py is the shell)
    "trietcd/lease/*.py",
    # member: the pure parts (member.py and the loops are the shell)
    "trietcd/server/membership.py", "trietcd/server/alarms.py", "trietcd/server/errors.py",
    "trietcd/server/autocompact.py",
    # transport (wire/conn.py, listener.py, tls.py are the shell)
    "trietcd/wire/h2_frames.py", "trietcd/wire/h2_conn.py", "trietcd/wire/grpc_call.py",
    "trietcd/wire/http1.py", "trietcd/wire/sniff.py",
    # API: the error mapping (the service handlers await the member)
    "trietcd/api/errors.py",
    # peers (peer/transport.py is the shell)
    "trietcd/peer/codec.py",
)

# What a core must not import: scheduling, clocks, randomness, the OS, files,
# sockets, threads, logging output.
FORBIDDEN_IN_CORES = frozenset({
    "trio", "anyio", "asyncio", "sniffio", "outcome",
    "time", "datetime", "random", "secrets", "uuid",
    "os", "io", "pathlib", "shutil", "tempfile", "glob", "fcntl", "mmap", "stat",
    "socket", "ssl", "select", "selectors", "signal", "subprocess",
    "threading", "_thread", "multiprocessing", "concurrent",
    "logging", "importlib",
})
# Builtins that do IO or defeat the import check.
FORBIDDEN_CALLS_IN_CORES = frozenset({"open", "print", "input", "breakpoint", "exec", "eval", "__import__"})


# ---- the source tree ---------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_sources() -> dict[str, Path]:
    found = {}
    for top in TOP_PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            found[module_name(path)] = path
    return found


SOURCES = all_sources()


def is_module(name: str) -> bool:
    return name in SOURCES


def core_modules() -> dict[str, Path]:
    cores = {}
    for pattern in CORES:
        for path in sorted(ROOT.glob(pattern)):
            cores[module_name(path)] = path
    return cores


CORE_MODULES = core_modules()


# ---- imports -----------------------------------------------------------------


@attrs.frozen
class Import:
    line: int
    target: str  # absolute dotted name, resolved to a module of ours when it is one
    text: str  # as written, for messages


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports_of(name: str, path: Path, tree: ast.AST) -> list[Import]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(name, path).split(".")
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            dots = "." * node.level
            for alias in node.names:
                text = f"from {dots}{node.module or ''} import {alias.name}"
                candidate = f"{base}.{alias.name}"
                target = candidate if is_module(candidate) else base
                found.append(Import(node.lineno, target, text))
    return found


def top_level(name: str) -> str:
    return name.partition(".")[0]


def ours(name: str) -> bool:
    return top_level(name) in TOP_PACKAGES


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    best = None
    for rank, prefixes in LAYERS:
        for prefix in prefixes:
            if _within(name, prefix) and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    return None if best is None else best[0]


def package_group(name: str) -> str | None:
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if _within(name, prefix):
                return prefix
    return None


def is_utility(name: str) -> bool:
    return any(_within(name, u) for u in UTILITIES)


def layer_violation(importer: str, target: str) -> str | None:
    """Why `importer` may not import `target` (both ours), or None."""
    if is_utility(importer):
        if target == METADATA or is_utility(target):
            return None
        return "a utility imports no layer"
    if importer == METADATA:
        return None if target in (METADATA, EMBED) else "the package metadata imports no layer"
    importer_rank = layer_of(importer)
    if importer_rank is None:
        return "the importing module belongs to no layer (add it to DESIGN.md's table and LAYERS)"
    if top_level(importer) == "storage" and top_level(target) != "storage":
        return "storage/ knows nothing of etcd or trietcd"
    if top_level(importer) == "proto" and top_level(target) != "proto":
        return "proto/ imports only proto/"
    if target == METADATA or is_utility(target):
        return None
    if _within(importer, "trietcd.wire") and not _within(target, "trietcd.wire"):
        return "trietcd/wire/ knows nothing of etcd: from trietcd it imports only itself, metadata and utilities"
    target_rank = layer_of(target)
    if target_rank is None:
        return "the imported module belongs to no layer"
    if target_rank > importer_rank:
        return f"a layer imports only layers below it ({package_group(target)} is above {package_group(importer)})"
    return None


def core_violations(name: str, tree: ast.AST, imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        if top_level(imp.target) in FORBIDDEN_IN_CORES:
            problems.append(f"line {imp.line}: `{imp.text}` ({top_level(imp.target)} is IO, time or randomness)")
        elif ours(imp.target) and not pure_target(imp.target):
            problems.append(f"line {imp.line}: `{imp.text}` ({imp.target} is not a core)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS_IN_CORES:
            problems.append(f"line {node.lineno}: call of builtin {node.func.id}()")
        elif isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith)):
            problems.append(f"line {node.lineno}: {type(node).__name__.lower()} (a core never awaits)")
    return problems


def pure_target(target: str, seen: frozenset[str] = frozenset()) -> bool:
    """A core may import other cores, the package metadata, the generated
    protobuf modules, and package `__init__`s that import only such things."""
    if target in CORE_MODULES or target == METADATA or target in PURE_UTILITIES:
        return True
    if top_level(target) == "proto":
        return target != "proto.gen"
    path = SOURCES.get(target)
    if path is None or path.name != "__init__.py" or target in seen:
        return False
    for imp in imports_of(target, path, parse(path)):
        if top_level(imp.target) in FORBIDDEN_IN_CORES:
            return False
        if ours(imp.target) and not pure_target(imp.target, seen | {target}):
            return False
    return True


_TREES: dict[Path, ast.AST] = {}


def parse(path: Path) -> ast.AST:
    if path not in _TREES:
        _TREES[path] = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return _TREES[path]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---- the rules ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_layer_order(name):
    path = SOURCES[name]
    problems = []
    for imp in imports_of(name, path, parse(path)):
        if not ours(imp.target):
            continue
        why = layer_violation(name, imp.target)
        if why:
            problems.append(f"{rel(path)}:{imp.line}: `{imp.text}`: {why}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(CORE_MODULES))
def test_core_is_sans_io(name):
    path = CORE_MODULES[name]
    tree = parse(path)
    problems = core_violations(name, tree, imports_of(name, path, tree))
    assert not problems, f"{rel(path)} is a sans-IO core but:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", PURE_UTILITIES)
def test_pure_utility_is_sans_io(name):
    path = SOURCES[name]
    tree = parse(path)
    problems = core_violations(name, tree, imports_of(name, path, tree))
    assert not problems, f"{rel(path)} is a pure utility but:\n" + "\n".join(problems)


def _packages() -> list[Path]:
    dirs = set()
    for path in SOURCES.values():
        dirs.add(path.parent)
    return sorted(dirs)


@pytest.mark.parametrize("directory", _packages(), ids=rel)
def test_package_defines_all(directory):
    init = directory / "__init__.py"
    assert init.exists(), f"{rel(directory)}/ holds modules but no __init__.py"
    tree = parse(init)
    exported = declared_all(tree)
    assert exported is not None, f"{rel(init)} does not define __all__"
    bound = bound_names(tree)
    missing = [n for n in exported if n not in bound and not (directory / f"{n}.py").exists()
               and not (directory / n / "__init__.py").exists()]
    assert not missing, f"{rel(init)}: __all__ names what it does not define: {missing}"


def declared_all(tree: ast.Module) -> list[str] | None:
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return [ast.literal_eval(e) for e in value.elts]
    return None


def bound_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).partition(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_every_module_has_a_layer():
    unplaced = [rel(p) for n, p in SOURCES.items()
                if layer_of(n) is None and n != METADATA and not is_utility(n)]
    assert not unplaced, f"modules outside every layer of DESIGN.md: {unplaced}"


def test_cores_are_in_layers_and_exist_somewhere():
    # A core list that matches nothing at all would check nothing.
    assert len(CORE_MODULES) >= 5
    for name in CORE_MODULES:
        assert layer_of(name) is not None, name


# ---- the checker itself ------------------------------------------------------


def _check_source(name: str, source: str, *, core: bool = False) -> list[str]:
    path = ROOT / (name.replace(".", "/") + ".py")
    tree = ast.parse(source)
    imports = imports_of(name, path, tree)
    problems = [why for i in imports if ours(i.target) and (why := layer_violation(name, i.target))]
    if core:
        problems += core_violations(name, tree, imports)
    return problems


@pytest.mark.parametrize(
    "name, source",
    [
        ("storage.tx", "from trietcd import mvcc"),
        ("storage.tx", "import proto.mvccpb.kv_pb2"),
        ("proto.gogo", "from trietcd.wire import Registry"),
        ("trietcd.raft.log", "from trietcd.mvcc import KVStore"),
        ("trietcd.mvcc.store", "from trietcd.server import member"),
        ("trietcd.wire.conn", "from proto.etcdserverpb import rpc_pb2"),
        ("trietcd.wire.conn", "from trietcd.mvcc import KVStore"),
        ("trietcd.wire.h2_conn", "from ..api import errors"),
        ("trietcd.api.kv", "from trietcd.peer import http"),
        ("trietcd.log", "from trietcd.server import member"),
        ("trietcd.frobnicate", "from trietcd.mvcc import KVStore"),
        ("trietcd.cli", "from trietcd.tools.benchmark import load"),
    ],
)
def test_checker_flags_layer_violations(name, source):
    assert _check_source(name, source)


@pytest.mark.parametrize(
    "name, source",
    [
        ("trietcd.api.kv", "from trietcd.mvcc import KVStore\nfrom proto.etcdserverpb import rpc_pb2"),
        ("trietcd.wire.conn", "from . import h2_frames\nimport trietcd\nfrom trietcd.log import logger"),
        ("trietcd.cli", "from trietcd import config\nfrom trietcd.server.member import Member"),
        ("trietcd.mvcc.store", "from trietcd.backend import schema"),
        ("storage.tx", "import struct\nimport attrs"),
    ],
)
def test_checker_accepts_allowed_imports(name, source):
    assert _check_source(name, source) == []


@pytest.mark.parametrize(
    "source",
    [
        "import trio",
        "from time import monotonic",
        "import random",
        "import os.path",
        "from socket import socket",
        "x = open('f')",
        "async def f(ch):\n    await ch.receive()",
        "from trietcd.wire import conn",
        "from trietcd.log import logger",
    ],
)
def test_checker_flags_core_io(source):
    assert _check_source("trietcd.wire.h2_conn", source, core=True)


def test_checker_accepts_pure_core():
    source = "import struct\nimport attrs\nfrom . import h2_frames as f\nasync def h(r, c):\n    raise E()"
    assert _check_source("trietcd.wire.grpc_call", source, core=True) == []
