"""The TLS settings of trietcd's configuration: etcd 3.5.10's --tls-min-version / --tls-max-version (flags,
ETCD_* and the YAML file) with its validation texts, and the YAML security blocks etcd 3.5.1 reads."""

from __future__ import annotations

import pytest

from trietcd.config import ConfigError, TLSInfo, parse


def parse_ok(argv, environ=None):
    return parse(argv, environ or {}, argv0="/usr/bin/etcd")


def failed_verify(argv, environ=None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(argv, environ or {}, argv0="/usr/bin/etcd")
    assert info.value.exit_code == 1
    lines = [line for line in info.value.lines if line.msg == "failed to verify flags"]
    assert len(lines) == 1, info.value.lines
    return dict(lines[0].fields)["error"]


def test_version_defaults():
    c = parse_ok([])
    assert (c.tls_min_version, c.tls_max_version) == ("TLS1.2", "")


def test_versions_from_flags_and_environment():
    c = parse_ok(["--tls-min-version", "TLS1.3"], {"ETCD_TLS_MAX_VERSION": "TLS1.3"})
    assert (c.tls_min_version, c.tls_max_version) == ("TLS1.3", "TLS1.3")


@pytest.mark.parametrize("argv, text", [
    (["--tls-min-version", "TLS1.1"], 'unexpected TLS version "TLS1.1" (must be one of: TLS1.2, TLS1.3)'),
    (["--tls-max-version", "tls1.3"], 'unexpected TLS version "tls1.3" (must be one of: TLS1.2, TLS1.3)'),
    (["--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2"],
     "min version (TLS1.3) is greater than max version (TLS1.2)"),
    (["--tls-min-version", "TLS1.3", "--cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
     "cipher suites cannot be configured when only TLS1.3 is enabled"),
])
def test_version_errors_read_like_etcd(argv, text):
    assert failed_verify(argv) == text


def test_unknown_cipher_suite_waits_for_start_up_as_in_etcd():
    # etcd 3.5.1 refuses it in StartEtcd ("failed to start etcd"), not while reading flags.
    assert parse_ok(["--cipher-suites", "BOGUS"]).cipher_suites == ("BOGUS",)


def test_tls_flags_reach_both_tls_infos():
    c = parse_ok(["--cert-file", "c", "--key-file", "k", "--trusted-ca-file", "ca", "--client-cert-auth",
                  "--client-crl-file", "crl", "--client-cert-allowed-hostname", "h", "--auto-tls",
                  "--peer-cert-file", "pc", "--peer-key-file", "pk", "--peer-trusted-ca-file", "pca",
                  "--peer-client-cert-auth", "--peer-crl-file", "pcrl", "--peer-cert-allowed-cn", "cn",
                  "--peer-auto-tls", "--self-signed-cert-validity", "3"])
    assert c.client_transport_security == TLSInfo(cert_file="c", key_file="k", trusted_ca_file="ca",
                                                  client_cert_auth=True, crl_file="crl", allowed_hostname="h",
                                                  auto_tls=True)
    assert c.peer_transport_security == TLSInfo(cert_file="pc", key_file="pk", trusted_ca_file="pca",
                                                client_cert_auth=True, crl_file="pcrl", allowed_cn="cn",
                                                auto_tls=True)
    assert c.self_signed_cert_validity == 3


def test_yaml_security_blocks_and_versions(tmp_path):
    path = tmp_path / "etcd.yaml"
    path.write_text("""\
tls-min-version: TLS1.2
tls-max-version: TLS1.3
cipher-suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
self-signed-cert-validity: 5
client-transport-security:
  cert-file: /c.pem
  key-file: /k.pem
  client-cert-file: /cc.pem
  client-key-file: /ck.pem
  client-cert-auth: true
  trusted-ca-file: /ca.pem
peer-transport-security:
  auto-tls: true
""")
    c = parse_ok(["--config-file", str(path)])
    assert (c.tls_min_version, c.tls_max_version) == ("TLS1.2", "TLS1.3")
    assert c.cipher_suites == ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)
    assert c.self_signed_cert_validity == 5
    assert c.client_transport_security == TLSInfo(cert_file="/c.pem", key_file="/k.pem", client_cert_file="/cc.pem",
                                                  client_key_file="/ck.pem", client_cert_auth=True,
                                                  trusted_ca_file="/ca.pem")
    assert c.peer_transport_security == TLSInfo(auto_tls=True)


def test_yaml_version_error(tmp_path):
    path = tmp_path / "etcd.yaml"
    path.write_text("tls-min-version: TLS1.3\ntls-max-version: TLS1.2\n")
    assert failed_verify(["--config-file", str(path)]) == "min version (TLS1.3) is greater than max version (TLS1.2)"
