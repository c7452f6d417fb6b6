"""wire/tls: etcd 3.5's TLS rules, certificate generation, CRL and hostname checks, and the listener's
TLS path (handshake deadline, refusals, Call.tls_common_name).

Certificates come from `Pki`, made with `cryptography` from a seeded random.Random: keys are derived
from seeded integers and serials are seeded, so every run gets the same keys and certificates (ECDSA
signatures differ run to run; nothing here depends on them). Handshakes run in memory (ssl MemoryBIO
pairs, trio memory streams); the gRPC test uses grpcio over loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import random
import ssl
import stat
from pathlib import Path

import grpc
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2
from trietcd.wire import http1, listener
from trietcd.wire.conn import ConnectionSet
from trietcd.wire.grpc_call import Registry
from trietcd.wire.h2_conn import H2Limits
from trietcd.wire.tls import (
    GO_CIPHER_SUITES,
    ServerTLS,
    ServerTLSConfig,
    TLSConfigError,
    TLSRejected,
    check_versions,
    client_san_error,
    common_name,
    parse_crl,
    self_signed_cert,
    server_context,
    tls_version,
    verify_hostname,
)

SEED = 20211005  # etcd 3.5.1's release date
NOT_BEFORE = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc)


# -- a test PKI ------------------------------------------------------------------------------------

class Pki:
    """CAs, leaves and CRLs written as PEM files under one directory; deterministic from `seed`."""

    def __init__(self, directory: Path, seed: int = SEED):
        self.dir = directory
        self.rng = random.Random(seed)
        self.cas: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {}
        self.certs: dict[str, x509.Certificate] = {}

    def _key(self) -> ec.EllipticCurvePrivateKey:
        return ec.derive_private_key(self.rng.randrange(1, 2**255), ec.SECP256R1())

    def _write(self, name: str, cert: x509.Certificate, key=None) -> None:
        (self.dir / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (self.dir / f"{name}-key.pem").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def ca(self, name: str) -> str:
        key = self._key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(self.rng.randrange(1, 2**63)).not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        self.cas[name] = (cert, key)
        self._write(name, cert)
        return str(self.dir / f"{name}.pem")

    def leaf(self, name: str, ca: str, cn: str, ips=(), dns=()) -> tuple[str, str]:
        """(cert file, key file) of a certificate for both server and client use."""
        ca_cert, ca_key = self.cas[ca]
        key = self._key()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                   .issuer_name(ca_cert.subject).public_key(key.public_key())
                   .serial_number(self.rng.randrange(1, 2**63))
                   .not_valid_before(NOT_BEFORE).not_valid_after(NOT_AFTER)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips] + [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        self.certs[name] = cert
        self._write(name, cert, key)
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}-key.pem")

    def crl(self, name: str, ca: str, revoked: list[str], der: bool = False) -> str:
        ca_cert, ca_key = self.cas[ca]
        builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
                   .last_update(NOT_BEFORE).next_update(NOT_AFTER))
        for leaf in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(self.certs[leaf].serial_number)
                .revocation_date(NOT_BEFORE).build())
        crl = builder.sign(ca_key, hashes.SHA256())
        path = self.dir / name
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
        return str(path)


def standard_pki(directory: Path) -> Pki:
    """ca (server 127.0.0.1/localhost, client CN=root, revoked CN=revoked, alice CN=alice with DNS SANs),
    elsewhere (CN=elsewhere, IP SAN 10.9.9.9 only), other-ca (foreign CN=root), and crl.pem of ca revoking `revoked`."""
    pki = Pki(directory)
    pki.ca("ca")
    pki.ca("other-ca")
    pki.leaf("server", "ca", "server", ips=["127.0.0.1"], dns=["localhost"])
    pki.leaf("client", "ca", "root")
    pki.leaf("revoked", "ca", "revoked")
    pki.leaf("alice", "ca", "alice", ips=["10.0.0.7"], dns=["alice.example.com", "*.nodes.example.com"])
    pki.leaf("foreign", "other-ca", "root")
    pki.leaf("elsewhere", "ca", "elsewhere", ips=["10.9.9.9"])
    pki.crl("crl.pem", "ca", ["revoked"])
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return standard_pki(tmp_path_factory.mktemp("pki"))


def files(pki: Pki, name: str) -> tuple[str, str]:
    return str(pki.dir / f"{name}.pem"), str(pki.dir / f"{name}-key.pem")


def server_tls(pki: Pki, **kwargs) -> ServerTLS:
    cert, key = files(pki, "server")
    return ServerTLS(ServerTLSConfig(cert, key, **kwargs))


def client_context(pki: Pki, cert: str | None = "client", ca: str = "ca", alpn=("h2",)) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.dir / f"{ca}.pem"))
    if cert:
        ctx.load_cert_chain(*files(pki, cert))
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name="localhost"):
    """Run a handshake in memory; (server SSLObject, client SSLObject). Raises ssl.SSLError of either side."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    s_in, s_out, c_in, c_out = bios
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    done = {"s": False, "c": False}
    for _ in range(20):
        for side, obj in (("c", client), ("s", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            # TLS 1.3: the server may refuse the client's certificate only after its own side is done;
            # a read on the client then surfaces the alert.
            try:
                client.read(1)
            except ssl.SSLWantReadError:
                pass
            return server, client
    raise AssertionError("handshake did not finish")


# -- versions and cipher suites ------------------------------------------------------------------

def test_tls_version_names_and_texts():
    assert tls_version("") is None
    assert tls_version("TLS1.2") == ssl.TLSVersion.TLSv1_2
    assert tls_version("TLS1.3") == ssl.TLSVersion.TLSv1_3
    with pytest.raises(TLSConfigError) as err:
        tls_version("TLS1.1")
    assert str(err.value) == 'unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)'


@pytest.mark.parametrize("low, high, suites, text", [
    ("TLS1.3", "TLS1.2", (), "min version (TLS1.3) is greater than max version (TLS1.2)"),
    ("TLS1.3", "", ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",),
     "cipher suites cannot be configured when only TLS1.3 is enabled"),
    ("TLS1.2", "", ("TLS_BOGUS",), 'unexpected TLS cipher suite "TLS_BOGUS"'),
    ("", "TLS1.0", (), 'unexpected TLS version "TLS1.0" (must be one of: TLS1.2, TLS1.3)'),
])
def test_check_versions_refuses_like_etcd(low, high, suites, text):
    with pytest.raises(TLSConfigError) as err:
        check_versions(low, high, suites)
    assert str(err.value) == text


def test_check_versions_accepts():
    check_versions("TLS1.2", "TLS1.3", ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",))
    check_versions("", "", ())
    check_versions("TLS1.3", "", ())


def test_default_range_is_etcd_351s_tls12_only(pki):
    server = server_tls(pki)
    _, client = handshake(server.context(), client_context(pki, cert=None))
    assert client.version() == "TLSv1.2"
    only_13 = client_context(pki, cert=None)
    only_13.minimum_version = ssl.TLSVersion.TLSv1_3
    with pytest.raises(ssl.SSLError):
        handshake(server.context(), only_13)


def test_tls13_when_asked(pki):
    for low, high in (("TLS1.2", "TLS1.3"), ("TLS1.3", "")):
        _, client = handshake(server_tls(pki, min_version=low, max_version=high).context(),
                              client_context(pki, cert=None))
        assert client.version() == "TLSv1.3"
    old = client_context(pki, cert=None)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(server_tls(pki, min_version="TLS1.3").context(), old)


def test_cipher_suites_by_go_name(pki):
    server = server_tls(pki, cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",))
    _, client = handshake(server.context(), client_context(pki, cert=None))
    assert client.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"


def test_every_go_cipher_name_maps_to_an_openssl_name_or_tls13():
    for go_name, openssl_name in GO_CIPHER_SUITES.items():
        assert go_name.startswith("TLS_")
        assert (openssl_name is None) == (go_name.count("_WITH_") == 0), go_name


# -- client certificates ---------------------------------------------------------------------------

def test_no_client_certificate_needed_without_ca_or_auth(pki):
    server, _ = handshake(server_tls(pki).context(), client_context(pki, cert=None))
    assert common_name(server) is None


@pytest.mark.parametrize("kwargs", [{"trusted_ca_file": "ca"}, {"client_cert_auth": True, "trusted_ca_file": "ca"}])
def test_trusted_ca_alone_requires_a_client_certificate(pki, kwargs):
    # Go's RequireAndVerifyClientCert, which etcd sets when a CA file is given or client cert auth is on.
    kwargs = {k: (str(pki.dir / "ca.pem") if k == "trusted_ca_file" else v) for k, v in kwargs.items()}
    tls = server_tls(pki, **kwargs)
    with pytest.raises(ssl.SSLError):
        handshake(tls.context(), client_context(pki, cert=None))
    with pytest.raises(ssl.SSLError):
        handshake(tls.context(), client_context(pki, cert="foreign"))
    server, _ = handshake(tls.context(), client_context(pki, cert="client"))
    assert common_name(server) == "root"
    tls.check(server)


def test_crl_refuses_a_revoked_certificate(pki):
    tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"), crl_file=str(pki.dir / "crl.pem"))
    server, _ = handshake(tls.context(), client_context(pki, cert="revoked"))
    serial = pki.certs["revoked"].serial_number
    go_hex = serial.to_bytes(8, "big").lstrip(bytes(1)).hex()  # Go's %x of the serial's big-endian bytes
    with pytest.raises(TLSRejected) as err:
        tls.check(server)
    assert str(err.value) == f"transport: certificate serial {go_hex} revoked"
    server, _ = handshake(tls.context(), client_context(pki, cert="client"))
    tls.check(server)


def test_crl_file_is_read_again_when_it_changes(tmp_path):
    pki = standard_pki(tmp_path)
    crl = pki.crl("live.crl", "ca", [], der=True)  # DER, as Go's ParseCRL also takes
    tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"), crl_file=crl)
    server, _ = handshake(tls.context(), client_context(pki, cert="client"))
    tls.check(server)
    pki.crl("live.crl", "ca", ["client"], der=True)
    with pytest.raises(TLSRejected):
        tls.check(server)
    Path(crl).write_bytes(b"not a crl")
    with pytest.raises(TLSRejected, match="malformed crl"):
        tls.check(server)


def test_parse_crl_pem_and_der(pki):
    pem = Path(pki.crl("a.crl", "ca", ["revoked", "client"])).read_bytes()
    der = Path(pki.crl("b.crl", "ca", ["revoked", "client"], der=True)).read_bytes()
    want = {pki.certs["revoked"].serial_number, pki.certs["client"].serial_number}
    assert parse_crl(pem) == parse_crl(der) == want
    with pytest.raises(TLSConfigError):
        parse_crl(b"-----BEGIN X509 CRL-----\nxx\n-----END X509 CRL-----\n")


def test_allowed_cn(pki):
    tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"), allowed_cn="alice")
    server, _ = handshake(tls.context(), client_context(pki, cert="alice"))
    tls.check(server)
    server, _ = handshake(tls.context(), client_context(pki, cert="client"))
    with pytest.raises(TLSRejected, match="^client certificate authentication failed$"):
        tls.check(server)


@pytest.mark.parametrize("hostname, ok", [
    ("alice.example.com", True), ("ALICE.example.com.", True), ("10.0.0.7", True), ("x.nodes.example.com", True),
    ("nodes.example.com", False), ("a.b.nodes.example.com", False), ("alice", False), ("10.0.0.8", False),
])
def test_allowed_hostname(pki, hostname, ok):
    tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"), allowed_hostname=hostname)
    server, _ = handshake(tls.context(), client_context(pki, cert="alice"))
    if ok:
        tls.check(server)
    else:
        with pytest.raises(TLSRejected):
            tls.check(server)


def test_verify_hostname_ignores_the_common_name(pki):
    # Go 1.16 (etcd 3.5.1's) no longer treats the CN as a hostname.
    assert not verify_hostname(pki.certs["client"], "root")
    assert verify_hostname(pki.certs["server"], "[127.0.0.1]") and verify_hostname(pki.certs["server"], "localhost")


def test_allowed_cn_and_hostname_are_exclusive(pki):
    with pytest.raises(TLSConfigError) as err:
        server_tls(pki, allowed_cn="a", allowed_hostname="b")
    assert str(err.value) == 'AllowedCN and AllowedHostname are mutually exclusive (cn="a", hostname="b")'


def test_bad_files_fail_at_start(pki, tmp_path):
    cert, key = files(pki, "server")
    with pytest.raises(TLSConfigError, match="no such file or directory"):
        ServerTLS(ServerTLSConfig(str(tmp_path / "missing.pem"), key))
    with pytest.raises(TLSConfigError, match="^tls: private key does not match public key$"):
        ServerTLS(ServerTLSConfig(cert, files(pki, "client")[1]))
    with pytest.raises(TLSConfigError) as err:
        ServerTLS(ServerTLSConfig(cert, key, client_cert_file="c.pem"))
    assert str(err.value) == "ClientKeyFile and ClientCertFile must both be present or both absent: key: , cert: c.pem]"
    with pytest.raises(TLSConfigError, match="^tls: private key does not match public key$"):
        ServerTLS(ServerTLSConfig(cert, key, client_cert_file=files(pki, "client")[0], client_key_file=key))
    with pytest.raises(TLSConfigError, match="KeyFile and CertFile must both be present"):
        ServerTLS(ServerTLSConfig(cert, ""))


# -- rotation ------------------------------------------------------------------------------------

def test_rotated_certificate_is_served_without_a_restart(tmp_path):
    pki = standard_pki(tmp_path)
    cert, key = pki.leaf("live", "ca", "first", ips=["127.0.0.1"], dns=["localhost"])
    tls = ServerTLS(ServerTLSConfig(cert, key))
    first = tls.context()
    assert tls.context() is first  # unchanged files: the same context
    _, client = handshake(tls.context(), client_context(pki, cert=None))
    assert dict(rdn[0] for rdn in client.getpeercert()["subject"])["commonName"] == "first"

    pki.leaf("live", "ca", "second", ips=["127.0.0.1"], dns=["localhost"])
    _, client = handshake(tls.context(), client_context(pki, cert=None))
    assert dict(rdn[0] for rdn in client.getpeercert()["subject"])["commonName"] == "second"


def test_half_written_rotation_fails_until_the_pair_matches(tmp_path):
    pki = standard_pki(tmp_path)
    cert, key = pki.leaf("live", "ca", "first", dns=["localhost"])
    tls = ServerTLS(ServerTLSConfig(cert, key))
    Path(cert).write_bytes((tmp_path / "alice.pem").read_bytes())  # new cert, old key
    with pytest.raises(TLSConfigError):
        tls.context()
    Path(key).write_bytes((tmp_path / "alice-key.pem").read_bytes())
    server, _ = handshake(tls.context(), client_context(pki, cert=None), server_name="alice.example.com")


# -- auto TLS ------------------------------------------------------------------------------------

def test_self_signed_cert_like_etcd(tmp_path):
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    directory = tmp_path / "data" / "fixtures" / "client"
    cert_file, key_file, created = self_signed_cert(str(directory), ["127.0.0.1:2379", "node1:2379", "[::1]:2379"],
                                                    2, now)
    assert created and cert_file == str(directory / "cert.pem") and key_file == str(directory / "key.pem")
    for d in (tmp_path / "data", tmp_path / "data" / "fixtures", directory):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert Path(key_file).read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    assert cert.subject.rfc4514_string() == "O=etcd" and cert.issuer == cert.subject
    assert cert.public_key().curve.name == "secp521r1"
    assert cert.not_valid_before_utc == now and cert.not_valid_after_utc == now + datetime.timedelta(days=730)
    assert 0 < cert.serial_number < 2**128
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    assert sans.get_values_for_type(x509.DNSName) == ["node1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The pair serves, and a client that trusts it verifies it for the listen address.
    ctx = ssl.create_default_context(cafile=cert_file)
    _, client = handshake(ServerTLS(ServerTLSConfig(cert_file, key_file)).context(), ctx, server_name="127.0.0.1")
    # An existing pair is kept, as etcd keeps it.
    again = self_signed_cert(str(directory), ["127.0.0.1:2379"], 1, now)
    assert again == (cert_file, key_file, False)
    assert x509.load_pem_x509_certificate(Path(cert_file).read_bytes()) == cert


def test_self_signed_cert_validity_must_be_positive(tmp_path):
    with pytest.raises(TLSConfigError, match="selfSignedCertValidity is invalid"):
        self_signed_cert(str(tmp_path), [], 0, NOT_BEFORE)


# -- the listener's TLS path -----------------------------------------------------------------------

async def echo_app(request: http1.Request) -> http1.Response:
    return http1.Response(200, (), b"ok")


def client_hello(pki: Pki) -> bytes:
    ctx = client_context(pki, cert=None)
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def test_stalled_handshake_is_closed_after_the_deadline(pki, autojump_clock):
    hello = client_hello(pki)
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(hello[: len(hello) // 2])  # a ClientHello that never completes
    start = trio.current_time()
    await listener._serve_connection(
        server, peer="", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=server_tls(pki),
        connections=ConnectionSet(), sniff_timeout_s=7.0, http1_limits=http1.Limits())
    assert trio.current_time() - start == pytest.approx(7.0)


async def test_client_that_never_answers_the_server_hello_is_closed(pki, autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(client_hello(pki))  # a whole ClientHello, then silence
    start = trio.current_time()
    await listener._serve_connection(
        server, peer="", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=server_tls(pki),
        connections=ConnectionSet(), sniff_timeout_s=5.0, http1_limits=http1.Limits())
    assert trio.current_time() - start == pytest.approx(5.0)
    assert (await client.receive_some()).startswith(b"\x16\x03")  # the ServerHello it never answered


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
async def test_plaintext_on_a_tls_listener_is_closed_without_an_answer(pki, first):
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(first)
    await listener._serve_connection(
        server, peer="", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=server_tls(pki),
        connections=ConnectionSet(), sniff_timeout_s=5.0, http1_limits=http1.Limits())
    await server.aclose()
    assert await client.receive_some() == b""


def cn_registry() -> Registry:
    async def range_(request, call):
        cn = call.tls_common_name
        return rpc_pb2.RangeResponse(count=0 if cn is None else 1,
                                     kvs=[] if cn is None else [kv_pb2.KeyValue(key=cn.encode())])

    registry = Registry()
    registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Range": range_})
    return registry


def grpc_range(port: int, pki: Pki, cert: str | None) -> rpc_pb2.RangeResponse:
    root = (pki.dir / "ca.pem").read_bytes()
    if cert:
        cert_file, key_file = files(pki, cert)
        credentials = grpc.ssl_channel_credentials(root, Path(key_file).read_bytes(), Path(cert_file).read_bytes())
    else:
        credentials = grpc.ssl_channel_credentials(root)
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        call = channel.unary_unary("/etcdserverpb.KV/Range",
                                   request_serializer=rpc_pb2.RangeRequest.SerializeToString,
                                   response_deserializer=rpc_pb2.RangeResponse.FromString)
        return call(rpc_pb2.RangeRequest(key=b"k"), timeout=5)


async def serve_tls(nursery, tls: ServerTLS) -> int:
    address = await nursery.start(lambda task_status: listener.serve_url(
        "https://127.0.0.1:0", registry=cn_registry(), http_app=echo_app, h2_limits=H2Limits(), ssl_context=tls,
        connections=ConnectionSet(), task_status=task_status))
    return address[1]


async def test_call_carries_the_verified_common_name(pki, nursery):
    port = await serve_tls(nursery, server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"),
                                               client_cert_auth=True, crl_file=str(pki.dir / "crl.pem")))
    response = await trio.to_thread.run_sync(grpc_range, port, pki, "client")
    assert [kv.key for kv in response.kvs] == [b"root"]
    for refused in (None, "foreign", "revoked"):
        with pytest.raises(grpc.RpcError) as err:
            await trio.to_thread.run_sync(grpc_range, port, pki, refused)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, refused


async def test_common_name_is_none_without_client_verification(pki, nursery):
    port = await serve_tls(nursery, server_tls(pki))
    response = await trio.to_thread.run_sync(grpc_range, port, pki, "client")  # offered, never asked for
    assert response.count == 0


async def test_fixed_context_still_serves(pki, nursery):
    # serve_url also takes a plain SSLContext (no reloading, no post-handshake checks).
    cert, key = files(pki, "server")
    port = await serve_tls(nursery, server_context(cert, key, str(pki.dir / "ca.pem")))
    response = await trio.to_thread.run_sync(grpc_range, port, pki, "client")
    assert [kv.key for kv in response.kvs] == [b"root"]


async def test_http1_request_carries_the_verified_common_name(pki, nursery):
    async def whoami(request: http1.Request) -> http1.Response:
        return http1.Response(200, (), repr(request.tls_common_name).encode())

    tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"))
    address = await nursery.start(lambda task_status: listener.serve_url(
        "https://127.0.0.1:0", registry=None, http_app=whoami, h2_limits=H2Limits(), ssl_context=tls,
        connections=ConnectionSet(), task_status=task_status))
    for cert, want in (("alice", b"'alice'"), ("client", b"'root'")):
        stream = trio.SSLStream(await trio.open_tcp_stream(*address), client_context(pki, cert=cert, alpn=()),
                                server_hostname="localhost")
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            out = b""
            try:
                while data := await stream.receive_some():
                    out += data
            except trio.BrokenResourceError:
                pass
        assert out.endswith(b"\r\n\r\n" + want)


# -- the peer rule: a client certificate's SANs name the connecting address ----------------------------

@pytest.mark.parametrize("host, ips, dns, addresses_of, error", [
    ("127.0.0.1", [], [], {}, None),
    ("127.0.0.1", ["127.0.0.1"], [], {}, None),
    ("127.0.0.1", ["10.0.0.1", "10.0.0.2"], [], {}, "x509: certificate is valid for 10.0.0.1, 10.0.0.2, not 127.0.0.1"),
    ("127.0.0.1", ["10.0.0.1"], ["node1"], {"node1": ["127.0.0.1"]}, None),
    ("127.0.0.1", [], ["node1", "*.x"], {"node1": ["10.1.1.1"]},
     'tls: "127.0.0.1" does not match any of DNSNames ["node1" "*.x"]'),
])
def test_client_san_error(host, ips, dns, addresses_of, error):
    assert client_san_error(host, ips, dns, addresses_of) == error


async def test_peer_listener_checks_client_sans(pki, nursery):
    ca = str(pki.dir / "ca.pem")
    results = {}
    for check in (True, False):
        tls = server_tls(pki, trusted_ca_file=ca, check_client_san=check)
        address = await nursery.start(lambda task_status: listener.serve_url(
            "https://127.0.0.1:0", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=tls,
            connections=ConnectionSet(), task_status=task_status))
        for cert in ("server", "elsewhere", "client"):  # SAN 127.0.0.1; another host's IP SAN; no SANs
            stream = trio.SSLStream(await trio.open_tcp_stream(*address), client_context(pki, cert=cert, alpn=()),
                                    server_hostname="localhost")
            out = b""
            try:
                async with stream:
                    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while data := await stream.receive_some():
                        out += data
            except trio.BrokenResourceError:
                pass
            results[check, cert] = out.endswith(b"ok")
    assert results == {(True, "server"): True, (True, "elsewhere"): False, (True, "client"): True,
                       (False, "server"): True, (False, "elsewhere"): True, (False, "client"): True}


@pytest.mark.parametrize("first, error", [(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                           "tls: first record does not look like a TLS handshake"), (b"", "EOF")])
async def test_refusal_is_logged_as_etcd_logs_it(pki, first, error):
    import io
    import json

    from trietcd.log import logger

    out = io.StringIO()
    saved = logger._out
    logger.set_output(out)
    try:
        client, server = trio.testing.memory_stream_pair()
        if first:
            await client.send_all(first)
        await client.send_eof()
        await listener._serve_connection(
            server, peer="ipv4:127.0.0.1:5555", registry=None, http_app=echo_app, h2_limits=H2Limits(),
            ssl_context=server_tls(pki), connections=ConnectionSet(), sniff_timeout_s=5.0,
            http1_limits=http1.Limits())
    finally:
        logger.set_output(saved)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(l["level"], l["msg"], l["remote-addr"], l["server-name"], l["error"]) for l in lines] == [
        ("warn", "rejected connection", "127.0.0.1:5555", "", error)]


@pytest.mark.parametrize("cert, error", [
    (None, "tls: client didn't provide a certificate"),
    ("foreign", "tls: failed to verify client certificate: x509: certificate signed by unknown authority"),
])
async def test_handshake_refusals_are_logged_in_gos_words(pki, cert, error, nursery):
    import io
    import json

    from trietcd.log import logger

    out = io.StringIO()
    saved = logger._out
    logger.set_output(out)
    try:
        tls = server_tls(pki, trusted_ca_file=str(pki.dir / "ca.pem"))
        address = await nursery.start(lambda task_status: listener.serve_url(
            "https://127.0.0.1:0", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=tls,
            connections=ConnectionSet(), task_status=task_status))
        stream = trio.SSLStream(await trio.open_tcp_stream(*address), client_context(pki, cert=cert, alpn=()),
                                server_hostname="localhost")
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()  # TLS 1.2: the server's alert ends the client's handshake
        await trio.aclose_forcefully(stream)
        with trio.fail_after(10):  # the server logs once it saw the handshake fail
            while not out.getvalue():
                await trio.sleep(0.01)
    finally:
        logger.set_output(saved)
    assert json.loads(out.getvalue().splitlines()[0])["error"] == error


@pytest.mark.parametrize("offered, chosen", [
    (("h2",), "h2"), (("grpc-exp", "h2"), "h2"), (("h2", "http/1.1"), "http/1.1"), (("http/1.1",), "http/1.1"),
    ((), None),
])
def test_alpn_gives_grpc_clients_h2_and_others_http1(pki, offered, chosen):
    _, client = handshake(server_tls(pki).context(), client_context(pki, cert=None, alpn=offered))
    assert client.selected_alpn_protocol() == chosen
