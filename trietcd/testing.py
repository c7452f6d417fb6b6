"""A real trietcd server for a Python project's tests, without etcd installed.

    # conftest.py
    pytest_plugins = ["trietcd.testing"]

    def test_put(trietcd_server):
        client = etcd3gw.client(host=trietcd_server.host, port=trietcd_server.port)

The server is a `python -m trietcd` child process, not a task in the test's process: it then works from
plain synchronous tests and from any event loop, does not compete with the tests for the GIL, and does
not load trietcd's protobuf modules into the test process (gRPC client libraries such as etcd3 and aetcd
register the same message names, etcdserverpb.*, in protobuf's default pool, and two registrations of
one name cannot share a process). `run_server` is the same thing without pytest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

__all__ = ["TestServer", "run_server", "trietcd_server", "trietcd_server_flags"]

STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# A chosen free port can be taken by someone else before the child binds it.
START_ATTEMPTS_MAX = 3


@attrs.frozen
class TestServer:
    """One running trietcd child process."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    process: subprocess.Popen
    host: str
    port: int
    peer_port: int
    data_dir: Path
    log_path: Path

    @property
    def endpoint(self) -> str:
        """host:port, as etcdctl --endpoints and most clients take it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_server(data_dir: str | os.PathLike | None = None, *, host: str = "127.0.0.1",
               startup_timeout_s: float = STARTUP_TIMEOUT_S, **flags: Any) -> Iterator[TestServer]:
    """A trietcd server on free loopback ports for the block; stopped (SIGTERM) when it ends.

    `data_dir` defaults to a temporary directory removed afterwards. `flags` are etcd's flags as keywords
    (`auto_compaction_retention="1h"`, `quota_backend_bytes=1 << 30`), as for trietcd.serve; the listen
    and advertise URLs, the name and the initial cluster are set here. The server's ETCD_* variables
    are cleared, so the test environment does not reconfigure it.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trietcd-test-")))
            data_dir = workdir / "default.etcd"
        else:
            data_dir = Path(data_dir)
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trietcd-test-log-")))
        for attempt in range(START_ATTEMPTS_MAX):
            server = _start(workdir, data_dir, host, flags, attempt)
            try:
                _wait_ready(server, startup_timeout_s)
                break
            except _PortTaken:
                continue
            except BaseException:
                _stop(server)
                raise
        else:
            raise RuntimeError(f"trietcd could not bind free ports in {START_ATTEMPTS_MAX} attempts:\n{server.log()}")
        try:
            yield server
        finally:
            _stop(server)


@pytest.fixture(scope="session")
def trietcd_server_flags() -> Mapping[str, Any]:
    """etcd flags of the session's server; override this fixture in a conftest.py to change them."""
    return {}


@pytest.fixture(scope="session")
def trietcd_server(trietcd_server_flags) -> Iterator[TestServer]:
    """One trietcd server for the test session (start-up costs about a second); give each test its own
    key prefix. A test that needs a server of its own uses `with run_server() as server:`."""
    with run_server(**trietcd_server_flags) as server:
        yield server


# A loopback server: never through an HTTP proxy the environment may name.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _PortTaken(Exception):
    pass


def _start(workdir: Path, data_dir: Path, host: str, flags: Mapping[str, Any], attempt: int) -> TestServer:
    from trietcd.embed import flags_to_argv

    port, peer_port = _free_port(host), _free_port(host)
    client_url, peer_url = f"http://{host}:{port}", f"http://{host}:{peer_port}"
    name = "default"
    argv = flags_to_argv({
        **flags,
        "name": name,
        "data_dir": data_dir,
        "listen_client_urls": client_url,
        "advertise_client_urls": client_url,
        "listen_peer_urls": peer_url,
        "initial_advertise_peer_urls": peer_url,
        "initial_cluster": f"{name}={peer_url}",
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    # The server is fastest on protobuf's default backend, whatever a client in the tests needed.
    env.pop("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", None)
    log_path = workdir / f"trietcd-{attempt}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trietcd", *argv],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir,
        )
    return TestServer(process, host, port, peer_port, data_dir, log_path)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _wait_ready(server: TestServer, timeout_s: float) -> None:
    """Until /health answers healthy: the listeners are bound and the member has a leader."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log()
            if "address already in use" in log:
                raise _PortTaken()
            raise RuntimeError(f"trietcd exited with {server.process.returncode}:\n{log}")
        try:
            with _NO_PROXY.open(server.url + "/health", timeout=1) as response:
                if response.status == 200 and b'"health":"true"' in response.read():
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"trietcd did not become healthy in {timeout_s} s:\n{server.log()}")


def _stop(server: TestServer) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
