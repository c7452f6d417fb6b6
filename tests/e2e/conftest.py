"""End-to-end fixtures: real trietcd and etcd processes (see servers.py)."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.servers import ETCD_BIN, TRIETCD, Server, start


@pytest.fixture
def trietcd(tmp_path):
    servers: list[Server] = []

    def _start(*extra: str, env: dict | None = None) -> Server:
        server = start(tmp_path, TRIETCD, *extra, env=env)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture
def etcd(tmp_path):
    servers: list[Server] = []

    def _start(*extra: str, env: dict | None = None) -> Server:
        server = start(tmp_path / "etcd", [str(ETCD_BIN / "etcd")], *extra, env=env)
        servers.append(server)
        return server

    (tmp_path / "etcd").mkdir()
    yield _start
    for server in servers:
        server.stop(signal.SIGKILL)
