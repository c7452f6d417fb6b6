"""Python etcd client libraries against trietcd and real etcd 3.5.1: one server of each per test module, shared
by its tests, each test under a key prefix of its own."""

from __future__ import annotations

import signal

import pytest

from tests.e2e import servers
from tests.e2e.clients.isolation import DELEGATED

IMPLS = {"trietcd": servers.TRIETCD_CMD, "etcd": servers.ETCD_CMD}


@pytest.fixture(scope="module", params=list(IMPLS))
def server(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"clients-{request.param}")
    # A client library may need protobuf's pure-Python backend in this process; the server does not.
    server = servers.start(run_dir, IMPLS[request.param], env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "upb"})
    yield server
    assert server.stop(signal.SIGTERM) is not None


@pytest.fixture
def prefix(request) -> bytes:
    """Keys of this test start with it (tests of a module share one server)."""
    return f"/clients/{request.node.name}/".encode()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if getattr(getattr(item, "module", None), DELEGATED, False) and item.name != "test_in_a_fresh_interpreter":
            item.add_marker(pytest.mark.skip(reason="runs in a fresh interpreter, in test_in_a_fresh_interpreter"))
