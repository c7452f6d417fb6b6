"""TLS end to end: a trietcd process and a real etcd 3.5.1 with the same certificates and TLS flags,
driven by etcdctl 3.5.1 and grpcio; both must answer alike.

Each server has an https client URL, --cert-file/--key-file of a server certificate,
--trusted-ca-file, --client-cert-auth, --client-crl-file revoking one client certificate, and an https
metrics URL. etcdctl output is compared after masking ports, timestamps and Go pointers; for refused
connections only the exit code and the final `Error:` line are compared (the warning before it quotes
the transport's own words for the broken connection, which differ run to run even on etcd alone).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import grpc
import pytest

from proto.etcdserverpb import rpc_pb2
from tests.e2e.servers import ETCD_BIN, ETCD_CMD, TRIETCD_CMD, Server, free_port
from tests.wire.test_tls import files, standard_pki

SERVER_KINDS = ("etcd", "trietcd")
# etcdctl retries a refused connection until its command timeout; a short one keeps those tests quick.
REFUSED_TIMEOUTS = ("--dial-timeout=1s", "--command-timeout=1s")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return standard_pki(tmp_path_factory.mktemp("pki"))


def tls_flags(pki, cert: str = "server") -> list[str]:
    cert_file, key_file = files(pki, cert)
    return ["--cert-file", cert_file, "--key-file", key_file, "--trusted-ca-file", str(pki.dir / "ca.pem"),
            "--client-cert-auth", "--client-crl-file", str(pki.dir / "crl.pem")]


def start(kind: str, work: Path, *extra: str, metrics: bool = False, peer_scheme: str = "http",
          wait: bool = True) -> tuple[Server, str | None]:
    """A member with an https client URL; (server, https metrics URL or None). Waits for the port."""
    work.mkdir(parents=True, exist_ok=True)
    client_url = f"https://127.0.0.1:{free_port()}"
    peer_url = f"{peer_scheme}://127.0.0.1:{free_port()}"
    metrics_url = f"https://127.0.0.1:{free_port()}" if metrics else None
    command = ETCD_CMD if kind == "etcd" else TRIETCD_CMD
    args = [*command, "--name", "n1", "--data-dir", str(work / "data"),
            "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"n1={peer_url}", *extra]
    if metrics_url:
        args += ["--listen-metrics-urls", metrics_url]
    log_path = work / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
                                start_new_session=True)
    server = Server(proc, client_url, peer_url, work / "data", log_path)
    if wait:
        # Every listener: the peer port may open after the client port.
        for url in (client_url, peer_url, *([metrics_url] if metrics_url else [])):
            _wait_port(server, url)
    return server, metrics_url


def _wait_port(server: Server, url: str, timeout: float = 15) -> None:
    import time

    deadline = time.monotonic() + timeout
    port = int(url.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}:\n{server.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server not ready:\n{server.log()}")


@pytest.fixture(scope="module")
def servers(pki, tmp_path_factory):
    base = tmp_path_factory.mktemp("tls-servers")
    started = {}
    try:
        for kind in SERVER_KINDS:
            started[kind] = start(kind, base / kind, *tls_flags(pki), metrics=True)
        yield started
    finally:
        for server, _ in started.values():
            server.stop(signal.SIGKILL)


def etcdctl(server: Server, *args: str, pki=None, cert: str | None = "client", ca: bool = True,
            timeout_args: tuple[str, ...] = ("--dial-timeout=1s", "--command-timeout=3s")):
    flags = [f"--endpoints={server.client_url}", *timeout_args]
    if pki is not None and ca:
        flags.append(f"--cacert={pki.dir / 'ca.pem'}")
    if pki is not None and cert:
        cert_file, key_file = files(pki, cert)
        flags += [f"--cert={cert_file}", f"--key={key_file}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    result = subprocess.run([str(ETCD_BIN / "etcdctl"), *flags, *args], capture_output=True, text=True,
                            env=env, timeout=30)
    return result.returncode, normalize(result.stdout), normalize(result.stderr)


def normalize(text: str) -> str:
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r'"ts":"[^"]*"', '"ts":"TS"', text)
    text = re.sub(r"0x[0-9a-f]{6,}", "0xPTR", text)
    text = re.sub(r"took = [0-9.]+[µnm]?s", "took = D", text)
    return text


def both(servers, *args, **kwargs) -> dict:
    return {kind: etcdctl(server, *args, **kwargs) for kind, (server, _) in servers.items()}


def test_etcdctl_with_client_certificate_alike(servers, pki):
    for command in (["put", "tls/a", "1"], ["put", "tls/b", "2"], ["get", "tls/", "--prefix"],
                    ["get", "tls/a", "--print-value-only"], ["del", "tls/", "--prefix"], ["get", "tls/a"],
                    ["endpoint", "health"]):
        out = both(servers, *command, pki=pki)
        assert out["trietcd"] == out["etcd"], command
        assert out["etcd"][0] == 0, (command, out)
    assert both(servers, "put", "tls/a", "1", pki=pki)["trietcd"][1] == "OK\n"


@pytest.mark.parametrize("cert", [None, "foreign", "revoked"], ids=["no-client-cert", "other-ca", "revoked-crl"])
def test_refused_client_certificates_alike(servers, pki, cert):
    out = both(servers, "get", "tls/a", pki=pki, cert=cert, timeout_args=REFUSED_TIMEOUTS)
    for kind, (code, stdout, stderr) in out.items():
        assert (code, stdout, stderr.splitlines()[-1]) == (1, "", "Error: context deadline exceeded"), (kind, stderr)


def test_server_certificate_from_unknown_ca_is_refused_alike(servers, pki):
    # No --cacert: etcdctl verifies the server against the system roots, which do not know the test CA.
    out = both(servers, "get", "tls/a", pki=pki, ca=False, timeout_args=REFUSED_TIMEOUTS)
    assert out["trietcd"][0] == out["etcd"][0] == 1
    for kind, (_, _, stderr) in out.items():
        assert "x509: certificate signed by unknown authority" in stderr, kind
        assert stderr.splitlines()[-1] == "Error: context deadline exceeded"


def raw_exchange(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(4096):
                out += chunk
        except ConnectionResetError:
            out += b"<RST>"
        return out


@pytest.mark.parametrize("first", [b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
                         ids=["http1", "h2-preface"])
def test_plaintext_to_https_listener_alike(servers, first):
    answers = {kind: raw_exchange(server.client_url, first) for kind, (server, _) in servers.items()}
    assert answers["trietcd"] == answers["etcd"] == b""


def https_get(url: str, pki, path: str, cert: str | None = "client") -> tuple[int, bytes]:
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    if cert:
        ctx.load_cert_chain(*files(pki, cert))
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while chunk := tls.recv(4096):
                out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_https_client_and_metrics_urls_serve_http1_alike(servers, pki):
    for kind, (server, metrics_url) in servers.items():
        assert https_get(server.client_url, pki, "/version") == (
            200, b'{"etcdserver":"3.5.1","etcdcluster":"3.5.0"}'), kind
        status, body = https_get(metrics_url, pki, "/health")
        assert status == 200 and json.loads(body)["health"] == "true", kind
        status, body = https_get(metrics_url, pki, "/metrics")
        assert status == 200 and b"# TYPE etcd_server_health_failures counter" in body, kind


def grpc_range(server: Server, pki, cert: str | None) -> rpc_pb2.RangeResponse:
    root = (pki.dir / "ca.pem").read_bytes()
    if cert:
        cert_file, key_file = files(pki, cert)
        credentials = grpc.ssl_channel_credentials(root, Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    else:
        credentials = grpc.ssl_channel_credentials(root)
    with grpc.secure_channel(server.client_url.removeprefix("https://"), credentials) as channel:
        call = channel.unary_unary("/etcdserverpb.KV/Range",
                                   request_serializer=rpc_pb2.RangeRequest.SerializeToString,
                                   response_deserializer=rpc_pb2.RangeResponse.FromString)
        return call(rpc_pb2.RangeRequest(key=b"tls/grpc"), timeout=5)


def test_grpcio_with_ssl_credentials_alike(servers, pki):
    for kind, (server, _) in servers.items():
        assert grpc_range(server, pki, "client").count == 0, kind
        for refused in (None, "foreign", "revoked"):
            with pytest.raises(grpc.RpcError) as err:
                grpc_range(server, pki, refused)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (kind, refused)


def peer_common_name(url: str, pki) -> str:
    ctx = ssl.create_default_context(cafile=str(pki.dir / "ca.pem"))
    ctx.load_cert_chain(*files(pki, "client"))
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            return dict(rdn[0] for rdn in tls.getpeercert()["subject"])["commonName"]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_rotated_server_certificate_without_restart(kind, pki, tmp_path):
    live_cert, live_key = tmp_path / "live.pem", tmp_path / "live-key.pem"
    for src, dst in zip(files(pki, "server"), (live_cert, live_key)):
        dst.write_bytes(Path(src).read_bytes())
    flags = tls_flags(pki)
    flags[1], flags[3] = str(live_cert), str(live_key)
    server, _ = start(kind, tmp_path / kind, *flags)
    try:
        assert peer_common_name(server.client_url, pki) == "server"
        pki.leaf("rotated", "ca", "rotated", ips=["127.0.0.1"])
        rotated = files(pki, "rotated")
        live_key.write_bytes(Path(rotated[1]).read_bytes())
        live_cert.write_bytes(Path(rotated[0]).read_bytes())
        assert peer_common_name(server.client_url, pki) == "rotated"
        assert etcdctl(server, "put", "k", "v", pki=pki)[:2] == (0, "OK\n")
    finally:
        server.stop(signal.SIGKILL)


def self_signed_facts(cert_file: Path) -> dict:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "curve": cert.public_key().curve.name,
        "signature": cert.signature_hash_algorithm.name,
        "sans": [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)],
        "eku": [oid.dotted_string for oid in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value],
        "ca": cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca,
        "days": (cert.not_valid_after_utc - cert.not_valid_before_utc).days,
    }


def peer_version_insecure(url: str) -> int:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with ctx.wrap_socket(sock) as tls:
            tls.sendall(f"GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            out = b""
            while chunk := tls.recv(4096):
                out += chunk
    return int(out.split()[1])


def test_auto_tls_alike(tmp_path):
    facts, outputs = {}, {}
    for kind in SERVER_KINDS:
        server, _ = start(kind, tmp_path / kind, "--auto-tls", "--peer-auto-tls", "--self-signed-cert-validity", "2",
                          peer_scheme="https")
        try:
            for which in ("client", "peer"):
                fixtures = server.data_dir / "fixtures" / which
                assert sorted(p.name for p in fixtures.iterdir()) == ["cert.pem", "key.pem"], kind
                assert oct((fixtures / "key.pem").stat().st_mode & 0o777) == "0o600", kind
                facts[kind, which] = self_signed_facts(fixtures / "cert.pem")
            facts[kind, "peer-answers"] = peer_version_insecure(server.peer_url)
            insecure = ("--insecure-skip-tls-verify", "--insecure-transport=false")
            outputs[kind] = [etcdctl(server, "put", "k", "v", timeout_args=insecure),
                             etcdctl(server, "get", "k", timeout_args=insecure),
                             etcdctl(server, "get", "k", timeout_args=REFUSED_TIMEOUTS)[0]]
        finally:
            server.stop(signal.SIGKILL)
    assert {k[1]: v for k, v in facts.items() if k[0] == "trietcd"} == {k[1]: v for k, v in facts.items()
                                                                         if k[0] == "etcd"}
    assert facts["etcd", "client"]["days"] == 730 and facts["etcd", "client"]["subject"] == "O=etcd"
    assert facts["etcd", "peer-answers"] == 200
    assert outputs["trietcd"] == outputs["etcd"]
    assert outputs["etcd"][1] == (0, "k\nv\n", "")


@pytest.mark.parametrize("cert, served", [("server", True), ("elsewhere", False), (None, False)],
                         ids=["san-names-127.0.0.1", "san-of-another-host", "no-client-cert"])
def test_peer_tls_alike(pki, tmp_path, cert, served):
    cert_file, key_file = files(pki, "server")
    peer_flags = ["--peer-cert-file", cert_file, "--peer-key-file", key_file,
                  "--peer-trusted-ca-file", str(pki.dir / "ca.pem"), "--peer-client-cert-auth"]
    answers = {}
    for kind in SERVER_KINDS:
        server, _ = start(kind, tmp_path / kind, *tls_flags(pki), *peer_flags, peer_scheme="https")
        try:
            try:
                status, body = https_get(server.peer_url, pki, "/version", cert=cert)
                answers[kind] = (status, json.loads(body)["etcdserver"])
            except (ssl.SSLError, ConnectionResetError, ValueError, IndexError):
                answers[kind] = "refused"
        finally:
            server.stop(signal.SIGKILL)
    assert answers["trietcd"] == answers["etcd"]
    assert (answers["etcd"] != "refused") == served


def start_up_error(kind: str, work: Path, *extra: str, peer_scheme: str = "http") -> tuple[int, str]:
    """(exit code, error of the fatal line) of a member that must not start. etcd 3.5.1 reports a certificate
    it cannot read as "listener failed" once it serves, trietcd as "failed to start etcd" before; the error
    text is the same."""
    server, _ = start(kind, work, *extra, peer_scheme=peer_scheme, wait=False)
    try:
        code = server.proc.wait(30)
    finally:
        server.stop(signal.SIGKILL)
    for line in server.log().splitlines():
        if '"failed to start etcd"' in line or '"listener failed"' in line:
            return code, normalize(json.loads(line)["error"])
    raise AssertionError(server.log())


@pytest.mark.parametrize("case", ["bad-cipher", "https-without-cert", "https-peer-without-cert", "missing-cert",
                                  "client-cert-without-key", "client-pair-mismatch"])
def test_start_up_errors_alike(pki, tmp_path, case):
    cert_file, key_file = files(pki, "server")
    extra, peer_scheme = {
        "bad-cipher": (["--cert-file", cert_file, "--key-file", key_file, "--cipher-suites", "TLS_BOGUS"], "http"),
        "https-without-cert": ([], "http"),
        "https-peer-without-cert": (["--cert-file", cert_file, "--key-file", key_file], "https"),
        "missing-cert": (["--cert-file", str(tmp_path / "missing.pem"), "--key-file", key_file], "http"),
        "client-cert-without-key": (["--cert-file", cert_file, "--key-file", key_file,
                                     "--client-cert-file", files(pki, "client")[0]], "http"),
        "client-pair-mismatch": (["--cert-file", cert_file, "--key-file", key_file, "--client-cert-file",
                                  files(pki, "client")[0], "--client-key-file", key_file], "http"),
    }[case]
    errors = {kind: start_up_error(kind, tmp_path / kind, *extra, peer_scheme=peer_scheme) for kind in SERVER_KINDS}
    assert errors["trietcd"] == errors["etcd"]
    assert errors["etcd"][0] == 1


def test_client_cert_allowed_hostname_alike(pki, tmp_path):
    outputs = {}
    for kind in SERVER_KINDS:
        server, _ = start(kind, tmp_path / kind, *tls_flags(pki), "--client-cert-allowed-hostname",
                          "alice.example.com")
        try:
            allowed = etcdctl(server, "put", "k", "v", pki=pki, cert="alice")
            refused = etcdctl(server, "get", "k", pki=pki, cert="client", timeout_args=REFUSED_TIMEOUTS)
            outputs[kind] = (allowed, refused[0], refused[1], refused[2].splitlines()[-1])
        finally:
            server.stop(signal.SIGKILL)
    assert outputs["trietcd"] == outputs["etcd"]
    assert outputs["etcd"] == ((0, "OK\n", ""), 1, "", "Error: context deadline exceeded")


def test_peer_cert_allowed_cn_alike(pki, tmp_path):
    cert_file, key_file = files(pki, "server")
    peer_flags = ["--peer-cert-file", cert_file, "--peer-key-file", key_file,
                  "--peer-trusted-ca-file", str(pki.dir / "ca.pem"), "--peer-cert-allowed-cn", "server"]
    answers = {}
    for kind in SERVER_KINDS:
        server, _ = start(kind, tmp_path / kind, *tls_flags(pki), *peer_flags, peer_scheme="https")
        try:
            for cert in ("server", "client"):  # CN=server; CN=root
                try:
                    answers[kind, cert] = https_get(server.peer_url, pki, "/version", cert=cert)[0]
                except (ssl.SSLError, ConnectionResetError, ValueError, IndexError):
                    answers[kind, cert] = "refused"
        finally:
            server.stop(signal.SIGKILL)
    assert answers == {("etcd", "server"): 200, ("etcd", "client"): "refused",
                       ("trietcd", "server"): 200, ("trietcd", "client"): "refused"}


def test_curl_over_https_alike(servers, pki):
    # curl offers h2 and http/1.1: etcd answers over HTTP/2, trietcd over HTTP/1.1; the answers match.
    import shutil

    if shutil.which("curl") is None:
        pytest.skip("no curl")
    cert_file, key_file = files(pki, "client")
    answers = {}
    for kind, (server, _) in servers.items():
        result = subprocess.run(["curl", "-s", "--cacert", str(pki.dir / "ca.pem"), "--cert", cert_file,
                                 "--key", key_file, "-w", " %{http_code}", f"{server.client_url}/version"],
                                capture_output=True, text=True, timeout=30)
        answers[kind] = (result.returncode, result.stdout)
    assert answers["trietcd"] == answers["etcd"] == (0, '{"etcdserver":"3.5.1","etcdcluster":"3.5.0"} 200')
