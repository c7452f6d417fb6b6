"""Client libraries that ship generated protobuf modules run in a fresh interpreter.

protobuf keeps one default pool of message names per process. etcd3's and aetcd's generated modules both
define etcdserverpb.*, mvccpb.* and authpb.*, and so do trietcd's own (proto/), which most other test
modules load: whichever comes second is refused ("duplicate symbol"), so a gRPC library loaded into the
suite's process would break the tests that follow as surely as it breaks itself when it comes after them.
python-etcd3 0.12 also ships modules generated for protobuf 3, which protobuf 4 and later load only with
the pure-Python backend (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python, set before protobuf is imported).

So the test module of such a library is, in the suite's process, one test that runs the module in a child
pytest and passes when every test there passes; the child (TRIETCD_CLIENT_TESTS_CHILD=1) runs the tests
themselves. For per-test output run the child directly, e.g.
    TRIETCD_CLIENT_TESTS_CHILD=1 python -m pytest tests/e2e/clients/test_aetcd.py
(with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python for test_etcd3.py).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CHILD_MARK = "TRIETCD_CLIENT_TESTS_CHILD"
CHILD_TIMEOUT_S = 900.0
DELEGATED = "DELEGATED_TO_CHILD"


def load(name: str, module_globals: dict, *, isolated: bool = False, child_env: Mapping[str, str] = {}):
    """Client library `name` for the test module whose globals are given, or None in the suite's process
    when `isolated` (the module's tests then run in a child, see above). Skips the module when the library
    is not installed."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')", allow_module_level=True)
    if not isolated or os.environ.get(CHILD_MARK):
        return importlib.import_module(name)
    module_globals[DELEGATED] = True
    module_globals["test_in_a_fresh_interpreter"] = _child_test(Path(module_globals["__file__"]), name, child_env)
    return None


def _child_test(path: Path, name: str, child_env: Mapping[str, str]):
    def test_in_a_fresh_interpreter():
        env = {**os.environ, CHILD_MARK: "1", **child_env}
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEsx", str(path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
        )
        summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
        print(f"{path.name} with {name} in a child pytest: {summary[0]}")
        assert result.returncode == 0, f"{path.name} in a fresh interpreter:\n{result.stdout}\n{result.stderr}"

    test_in_a_fresh_interpreter.__doc__ = f"Every test of {path.name}, run with {name} in a fresh interpreter."
    return test_in_a_fresh_interpreter
