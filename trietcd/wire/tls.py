"""Server-side TLS for the listeners, configured the way etcd 3.5 configures Go's crypto/tls.

Rules (etcd `client/pkg/transport/listener.go` and `listener_tls.go`, v3.5.1):
- TLS 1.2 is the floor. With no maximum given the ceiling is TLS 1.2 too, as etcd 3.5.1 sets it
  (later 3.5 releases took `--tls-max-version`; naming TLS1.3 there, or as the minimum, lifts it).
- A client certificate is required and verified when a trusted CA file is given *or* client cert
  auth is on (Go's RequireAndVerifyClientCert); with no CA file the system roots verify it.
- After the handshake, a verified client certificate must pass the allowed CN / allowed hostname
  rule and must not be listed in the CRL file; otherwise the connection is closed. etcd checks the
  CN and hostname inside the handshake and the CRL after it; here both come after it.
- The certificate and key files are read for every new connection and the context rebuilt when
  their bytes changed, so a rotated certificate is served without a restart (etcd re-reads them
  on every handshake). The CA file is read with them (etcd reads it once). The CRL file is read
  for every verified connection, as in etcd, and parsed again when it changed.
- Cipher suites are named as Go names them; they apply to TLS 1.2 (Go cannot restrict TLS 1.3's).

ALPN prefers "http/1.1", then "h2" (the server's order decides): gRPC clients offer only h2 and
get it; curl and browsers offer both and get HTTP/1.1, where the JSON gateway and /health are
served. etcd offers only h2 and serves its gateway over HTTP/2 too; trietcd's HTTP/2 side serves
gRPC alone, so this order is what keeps `curl https://...` working.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl

import attrs

__all__ = [
    "ALPN_PROTOCOLS",
    "GO_CIPHER_SUITES",
    "ServerTLS",
    "ServerTLSConfig",
    "TLSConfigError",
    "TLSRejected",
    "check_versions",
    "client_san_error",
    "common_name",
    "self_signed_cert",
    "server_context",
    "tls_version",
    "verify_hostname",
]

ALPN_PROTOCOLS = ("http/1.1", "h2")

# Go's cipher suite names (crypto/tls CipherSuites() and InsecureCipherSuites(), plus the two short
# aliases etcd's tlsutil accepts) -> OpenSSL's name for the same IANA suite. TLS 1.3 suites map to
# None: Go accepts their names but they cannot be restricted.
GO_CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

_VERSIONS = {"": None, "TLS1.2": ssl.TLSVersion.TLSv1_2, "TLS1.3": ssl.TLSVersion.TLSv1_3}

# What a refused client certificate is told in the log, in Go's words.
CLIENT_CERT_AUTH_FAILED = "client certificate authentication failed"


class TLSConfigError(ValueError):
    """Settings (or files) that cannot make a TLS server; str() reads like etcd's error."""


class TLSRejected(Exception):
    """A connection whose handshake succeeded but whose client certificate is refused."""


def tls_version(name: str) -> ssl.TLSVersion | None:
    """etcd's tlsutil.GetTLSVersion: "" (let the library decide), "TLS1.2" or "TLS1.3"."""
    if name not in _VERSIONS:
        raise TLSConfigError(f'unexpected TLS version "{name}" (must be one of: TLS1.2, TLS1.3)')
    return _VERSIONS[name]


def check_versions(min_version: str, max_version: str, cipher_suites: tuple[str, ...]) -> None:
    """etcd's checks of --tls-min-version, --tls-max-version and --cipher-suites, with its texts."""
    low, high = tls_version(min_version), tls_version(max_version)
    if low is not None and high is not None and low > high:
        raise TLSConfigError(f"min version ({min_version}) is greater than max version ({max_version})")
    if low == ssl.TLSVersion.TLSv1_3 and cipher_suites:
        raise TLSConfigError("cipher suites cannot be configured when only TLS1.3 is enabled")
    for name in cipher_suites:
        if name not in GO_CIPHER_SUITES:
            raise TLSConfigError(f'unexpected TLS cipher suite "{name}"')


@attrs.frozen
class ServerTLSConfig:
    cert_file: str
    key_file: str
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    crl_file: str = ""
    allowed_cn: str = ""
    allowed_hostname: str = ""
    cipher_suites: tuple[str, ...] = ()  # Go names
    min_version: str = "TLS1.2"
    max_version: str = ""
    alpn_protocols: tuple[str, ...] = ALPN_PROTOCOLS
    # etcd's peer listeners: a client certificate with SANs must name the connecting address.
    check_client_san: bool = False
    # The pair this member dials with (etcd checks it with the listener's own pair at start).
    client_cert_file: str = ""
    client_key_file: str = ""

    def verifies_clients(self) -> bool:
        return bool(self.trusted_ca_file) or self.client_cert_auth


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class ServerTLS:
    """The TLS side of one listener: a context per new connection, checks after each handshake.

    Construction validates everything (and raises TLSConfigError), so a bad setting stops the
    server at start-up as in etcd, not at the first connection.
    """

    def __init__(self, config: ServerTLSConfig):
        if not config.cert_file or not config.key_file:
            raise TLSConfigError(
                f"KeyFile and CertFile must both be present[key: {config.key_file}, cert: {config.cert_file}]")
        if config.allowed_cn and config.allowed_hostname:
            raise TLSConfigError(
                f'AllowedCN and AllowedHostname are mutually exclusive (cn="{config.allowed_cn}", '
                f'hostname="{config.allowed_hostname}")')
        check_versions(config.min_version, config.max_version, config.cipher_suites)
        if (config.client_key_file == "") != (config.client_cert_file == ""):
            raise TLSConfigError(
                f"ClientKeyFile and ClientCertFile must both be present or both absent: "
                f"key: {config.client_key_file}, cert: {config.client_cert_file}]")
        if config.client_cert_file:
            _load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), config.client_cert_file, config.client_key_file)
        self.config = config
        self._signature: tuple[bytes, bytes] | None = None
        self._context: ssl.SSLContext | None = None
        self._crl_bytes: bytes | None = None
        self._revoked: frozenset[int] = frozenset()
        self.context()
        if config.crl_file:
            self._revoked_serials()

    def with_client_san_check(self) -> "ServerTLS":
        """The same settings with the peer SAN rule on (etcd's https metrics listeners have it)."""
        return ServerTLS(attrs.evolve(self.config, check_client_san=True))

    def context(self) -> ssl.SSLContext:
        """The context for a new connection; rebuilt when the certificate or key file changed."""
        # The files' bytes, not their mtimes, tell a change: file times tick coarsely, and a
        # certificate renewed within one tick has the same size. They are a few KiB.
        try:
            signature = (_read(self.config.cert_file), _read(self.config.key_file))
        except OSError as exc:
            raise TLSConfigError(f"open {exc.filename}: {_os_error_text(exc)}") from None
        if signature != self._signature or self._context is None:
            # Build first, swap after: a half-written rotation keeps failing until both files
            # match, and each new connection tries again.
            self._context = self._build()
            self._signature = signature
        return self._context

    def _build(self) -> ssl.SSLContext:
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = tls_version(cfg.min_version) or ssl.TLSVersion.TLSv1_2
        high = tls_version(cfg.max_version)
        if high is None:
            high = ssl.TLSVersion.TLSv1_3 if ctx.minimum_version == ssl.TLSVersion.TLSv1_3 else ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = high
        _load_pair(ctx, cfg.cert_file, cfg.key_file)
        if cfg.alpn_protocols:
            ctx.set_alpn_protocols(list(cfg.alpn_protocols))
        # HTTP/2 forbids renegotiation and compression (RFC 7540 section 9.2).
        ctx.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
        if cfg.cipher_suites:
            names = [GO_CIPHER_SUITES[n] for n in cfg.cipher_suites if GO_CIPHER_SUITES[n]]
            try:
                ctx.set_ciphers(":".join(dict.fromkeys(names)))
            except ssl.SSLError:
                raise TLSConfigError(
                    f"no cipher suite of {list(cfg.cipher_suites)} is available in this OpenSSL") from None
        if cfg.trusted_ca_file:
            try:
                ctx.load_verify_locations(cafile=cfg.trusted_ca_file)
            except (ssl.SSLError, OSError) as exc:
                raise TLSConfigError(f"failed to load CA file {cfg.trusted_ca_file}: {exc}") from None
        if cfg.verifies_clients():
            if not cfg.trusted_ca_file:
                # Go verifies client chains against the system roots when no CA file is given.
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def check(self, ssl_object) -> None:
        """Raise TLSRejected if the verified client certificate of a finished handshake is refused."""
        cfg = self.config
        if not cfg.verifies_clients():
            return
        der = ssl_object.getpeercert(binary_form=True)
        if der is None:
            return
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        if cfg.allowed_cn and common_name_of(cert) != cfg.allowed_cn:
            raise TLSRejected(CLIENT_CERT_AUTH_FAILED)
        if cfg.allowed_hostname and not verify_hostname(cert, cfg.allowed_hostname):
            raise TLSRejected(CLIENT_CERT_AUTH_FAILED)
        if cfg.crl_file:
            try:
                revoked = self._revoked_serials()
            except TLSConfigError as exc:
                raise TLSRejected(str(exc)) from None
            if cert.serial_number in revoked:
                raise TLSRejected(f"transport: certificate serial {_serial_hex(cert.serial_number)} revoked")

    def client_sans(self, ssl_object) -> tuple[list[str], list[str]] | None:
        """(IP SANs, DNS SANs) of the verified client certificate when the peer SAN rule applies."""
        if not self.config.check_client_san or not self.config.verifies_clients():
            return None
        der = ssl_object.getpeercert(binary_form=True)
        if der is None:
            return None
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return [], []
        return ([str(ip) for ip in sans.get_values_for_type(x509.IPAddress)],
                list(sans.get_values_for_type(x509.DNSName)))

    def _revoked_serials(self) -> frozenset[int]:
        path = self.config.crl_file
        try:
            data = _read(path)
        except OSError as exc:
            raise TLSConfigError(f"open {path}: {_os_error_text(exc)}") from None
        if data != self._crl_bytes:
            self._revoked = parse_crl(data)
            self._crl_bytes = data
        return self._revoked


def _load_pair(ctx: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError("tls: private key does not match public key") from None
        raise TLSConfigError(f"tls: failed to load key pair ({cert_file}, {key_file}): {exc.reason or exc}") from None
    except OSError as exc:
        raise TLSConfigError(f"open {exc.filename or cert_file}: {_os_error_text(exc)}") from None


def server_context(cert_file: str, key_file: str, trusted_ca_file: str = "",
                   client_cert_auth: bool = False) -> ssl.SSLContext:
    """A fixed context with etcd's defaults (no reloading, no post-handshake checks)."""
    return ServerTLS(ServerTLSConfig(cert_file, key_file, trusted_ca_file, client_cert_auth)).context()


def parse_crl(data: bytes) -> frozenset[int]:
    """Serial numbers a CRL revokes; PEM or DER, as Go's x509.ParseCRL takes either."""
    from cryptography import x509

    try:
        if data.lstrip().startswith(b"-----BEGIN X509 CRL"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise TLSConfigError(f"x509: malformed crl: {exc}") from None
    return frozenset(entry.serial_number for entry in crl)


def _serial_hex(serial: int) -> str:
    # Go prints the big-endian bytes of the serial with %x.
    return serial.to_bytes((serial.bit_length() + 7) // 8, "big").hex()


def client_san_error(host: str, ips: list[str], dns_names: list[str],
                     addresses_of: dict[str, list[str]]) -> str | None:
    """etcd's checkCertSAN for a peer's client certificate: None when the SANs name `host`, the
    connecting IP (an IP SAN equal to it, or a DNS SAN whose addresses, `addresses_of`, include it;
    etcd also tries a reverse lookup, which is not done here), else the error etcd logs."""
    if not ips and not dns_names:
        return None
    try:
        remote = ipaddress.ip_address(host)
    except ValueError:
        remote = None
    if ips:
        if remote is not None and any(ipaddress.ip_address(ip) == remote for ip in ips):
            return None
        if not dns_names:
            return f"x509: certificate is valid for {', '.join(ips)}, not {host}"
    for name in dns_names:
        if not name.startswith("*.") and host in addresses_of.get(name, ()):
            return None
    quoted = " ".join(f'"{name}"' for name in dns_names)
    return f'tls: "{host}" does not match any of DNSNames [{quoted}]'


def common_name_of(cert) -> str:
    """Go's Subject.CommonName: the last CN attribute, or ""."""
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[-1].value) if names else ""


def common_name(ssl_object) -> str | None:
    """The Subject CommonName of the verified client certificate of a TLS connection, else None.

    `getpeercert()` returns a decoded certificate only when it was verified (CERT_REQUIRED)."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    cn = None
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    return cn


def verify_hostname(cert, host: str) -> bool:
    """Go's Certificate.VerifyHostname, as Go 1.16 runs it: an IP is matched against the IP SANs,
    a name against the DNS SANs (a leading "*." matches one label); the CN is not a hostname."""
    from cryptography import x509

    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    candidate = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in sans.get_values_for_type(x509.IPAddress)
    wanted = host.lower().rstrip(".")
    return any(_match_hostname(pattern.lower().rstrip("."), wanted)
               for pattern in sans.get_values_for_type(x509.DNSName))


def _match_hostname(pattern: str, host: str) -> bool:
    if not pattern or not host:
        return False
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    for i, (p, h) in enumerate(zip(p_labels, h_labels)):
        if i == 0 and p == "*":
            continue
        if p != h:
            return False
    return True


def self_signed_cert(dir_path: str, hosts: list[str], validity_years: int,
                     now: datetime.datetime) -> tuple[str, str, bool]:
    """etcd's transport.SelfCert: (cert path, key path, created) under `dir_path`.

    An existing cert.pem and key.pem pair is reused. Otherwise: an ECDSA P-521 key, a random
    128-bit serial, Subject O=etcd, valid from `now` for `validity_years` * 365 days, server auth
    usage, and one SAN per host ("host:port"; an IP becomes an IP SAN, anything else a DNS SAN).
    """
    if validity_years <= 0:
        raise TLSConfigError("selfSignedCertValidity is invalid,it should be greater than 0")
    _make_private_dirs(dir_path)
    cert_path = os.path.abspath(os.path.join(dir_path, "cert.pem"))
    key_path = os.path.abspath(os.path.join(dir_path, "key.pem"))
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path, False

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP521R1())
    sans: list = []
    for host in hosts:
        name = _split_host(host)
        if not name:
            continue
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(secrets.randbits(128) or 1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365 * validity_years))
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA512())
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return cert_path, key_path, True


def _make_private_dirs(path: str) -> None:
    """mkdir -p where every directory made is 0700 (etcd's fileutil.TouchDirAll); os.makedirs
    would give the missing parents the umask's mode."""
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        _make_private_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def _split_host(hostport: str) -> str:
    """The host of "host:port" (Go's net.SplitHostPort, brackets removed); "" when malformed."""
    if hostport.startswith("["):
        end = hostport.find("]")
        return hostport[1:end] if end > 0 else ""
    host, sep, _ = hostport.rpartition(":")
    if not sep or ":" in host:
        return ""
    return host


def _os_error_text(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()
