"""Loading a client library into the test process, or else running its test module in a fresh interpreter.

gRPC client libraries ship their own generated protobuf modules, and protobuf keeps one default pool of
message names per process: etcd3's and aetcd's modules both define etcdserverpb.*, mvccpb.* and authpb.*,
and so do trietcd's own (proto/), which other test modules load. Whichever comes second is refused
("duplicate symbol"). python-etcd3 0.12 also ships modules generated for protobuf 3, which protobuf 4 and
later only load with its pure-Python backend (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, set before
protobuf is first imported). So a module that cannot load its library here re-runs itself in a child
pytest, where nothing else is loaded, and stands for it as one test.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
# Set in the child, so that it reports its own failure instead of delegating again.
CHILD_MARK = "TRIETCD_CLIENT_TESTS_CHILD"
CHILD_TIMEOUT_S = 900.0
DELEGATED = "DELEGATED_TO_CHILD"


def load(name: str, module_globals: dict, child_env: Mapping[str, str] = {}):
    """Imports client library `name` for the test module whose globals are given; skips the module when
    the library is not installed. Returns None (and adds the child run as the module's one test) when
    the library is installed but cannot load into this process."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name is not None and (exc.name == name or name.startswith(exc.name + ".")):
            pytest.skip(f"{name} is not installed (pip install -e '.[test]')", allow_module_level=True)
        reason = exc
    except TypeError as exc:  # protobuf refuses the library's generated modules
        reason = exc
    if os.environ.get(CHILD_MARK):
        raise RuntimeError(f"{name} cannot be imported even in a fresh interpreter") from reason
    module_globals[DELEGATED] = True
    module_globals["test_in_a_fresh_interpreter"] = _child_test(
        Path(module_globals["__file__"]), name, f"{type(reason).__name__}: {str(reason).splitlines()[0]}", child_env,
    )
    return None


def _child_test(path: Path, name: str, reason: str, child_env: Mapping[str, str]):
    def test_in_a_fresh_interpreter():
        env = {**os.environ, CHILD_MARK: "1", **child_env}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", str(path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
        )
        summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
        print(f"{name} could not load in this process ({reason}); its tests ran in a child: {summary[0]}")
        assert result.returncode == 0, f"{path.name} in a fresh interpreter:\n{result.stdout}\n{result.stderr}"

    test_in_a_fresh_interpreter.__doc__ = f"Every test of {path.name}, run with {name} in a fresh interpreter."
    return test_in_a_fresh_interpreter
