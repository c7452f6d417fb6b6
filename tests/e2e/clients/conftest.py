"""Python etcd client libraries against trietcd and real etcd 3.5.1: one server of each per test module, shared
by its tests, each test under a key prefix of its own."""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

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
    server.stop(signal.SIGTERM)


@pytest.fixture(params=list(IMPLS))
def auth_server(request, tmp_path):
    """A server of its own with auth on: users root and alice (password "pw"), alice may read and write
    keys under /a/ only. Set up with etcdctl 3.5.1."""
    server = servers.start(tmp_path, IMPLS[request.param], env={"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "upb"})
    try:
        _set_up_auth(server)
        yield server
    finally:
        server.stop(signal.SIGKILL)


@pytest.fixture(params=list(IMPLS))
def tls_auth_server(request, tmp_path):
    """(server, CA file): auth_server's users and roles on a server whose client URL is https (a certificate
    for 127.0.0.1 from the CA); no client certificates."""
    ca_file, cert_file, key_file = make_certificates(tmp_path / "pki")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    client_url = f"https://127.0.0.1:{servers.free_port()}"
    peer_url = f"http://127.0.0.1:{servers.free_port()}"
    flags = servers.server_flags("node1", run_dir / "node1.etcd", client_url, peer_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "upb"
    log_path = run_dir / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*IMPLS[request.param], *flags, "--cert-file", str(cert_file), "--key-file", str(key_file)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=run_dir, start_new_session=True,
        )
    server = servers.Server(process, client_url, peer_url, run_dir / "node1.etcd", log_path)
    try:
        _wait_accepting(server)
        _set_up_auth(server, f"--cacert={ca_file}")
        yield server, ca_file
    finally:
        server.stop(signal.SIGKILL)


def _wait_accepting(server, timeout_s: float = 15) -> None:
    # servers.wait_ready reads http:// URLs only.
    port = int(server.client_url.rsplit(":", 1)[1])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server not ready:\n{server.log()}")


def _set_up_auth(server, *etcdctl_flags: str) -> None:
    for command in (
        ["user", "add", "root:pw"], ["auth", "enable"],
        ["--user=root:pw", "user", "add", "alice:pw"], ["--user=root:pw", "role", "add", "a-rw"],
        ["--user=root:pw", "role", "grant-permission", "a-rw", "readwrite", "/a/", "--prefix=true"],
        ["--user=root:pw", "user", "grant-role", "alice", "a-rw"],
    ):
        result = server.etcdctl(*etcdctl_flags, *command)
        assert result.returncode == 0, (command, result.stdout, result.stderr)


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate it signed for IP 127.0.0.1: (ca.pem, server.pem, server-key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clients-test-ca")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server")])).issuer_name(ca_name)
        .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ))
    return paths


@pytest.fixture
def prefix(request) -> bytes:
    """Keys of this test start with it (tests of a module share one server)."""
    return f"/clients/{request.node.name}/".encode()


def pytest_collection_modifyitems(config, items):
    # A module whose library must run in a fresh interpreter is, here, only its test_in_a_fresh_interpreter.
    elsewhere = [item for item in items if getattr(getattr(item, "module", None), DELEGATED, False)
                 and item.name != "test_in_a_fresh_interpreter"]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        moved = set(map(id, elsewhere))
        items[:] = [item for item in items if id(item) not in moved]
