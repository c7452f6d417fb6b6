"""Put throughput with auth and with TLS, real etcd 3.5.1 and trietcd side by side.

    python -m benchmarks.secure_put [--total 20000] [--conns 10] [--clients 100]

For each server and each mode, a fresh member and one `trietcd-benchmark put` run (8-byte sequential keys,
256-byte values):
- plain: no auth, no TLS (the reference);
- auth: users root and bench, auth enabled, every call carrying bench's simple token (`--user`);
- tls: the client URL on https with a certificate made for the run (`--cacert`).
Prints requests/s and p99, and each mode's figure against the same server's plain one.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.unary_noop import _etcd_bin_dir, _repo_root, _stop, free_port  # noqa: E402

MODES = ("plain", "auth", "tls")


def make_cert(directory: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA): (cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_file, key_file


def start(kind: str, mode: str, work: str, cert: tuple[str, str]) -> tuple[subprocess.Popen, str]:
    port, peer = free_port(), free_port()
    scheme = "https" if mode == "tls" else "http"
    client = f"{scheme}://127.0.0.1:{port}"
    argv = [
        "--name", "bench", "--data-dir", os.path.join(work, f"{kind}-{mode}.etcd"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"bench=http://127.0.0.1:{peer}", "--log-level", "error",
    ]
    if mode == "tls":
        argv += ["--cert-file", cert[0], "--key-file", cert[1]]
    cmd = [os.path.join(_etcd_bin_dir(), "etcd")] if kind == "etcd" else [sys.executable, "-m", "trietcd"]
    proc = subprocess.Popen([*cmd, *argv], cwd=_repo_root(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    etcdctl = [os.path.join(_etcd_bin_dir(), "etcdctl"), f"--endpoints={client}"]
    if mode == "tls":
        etcdctl.append(f"--cacert={cert[0]}")
    deadline = time.monotonic() + 30
    while subprocess.run([*etcdctl, "endpoint", "health"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind} ({mode}) did not start")
        time.sleep(0.2)
    if mode == "auth":
        for args in (["user", "add", "root:rootpw"], ["user", "add", "bench:benchpw"],
                     ["role", "add", "bench"], ["role", "grant-permission", "bench", "readwrite", "", "--from-key"],
                     ["user", "grant-role", "bench", "bench"], ["auth", "enable"]):
            subprocess.run([*etcdctl, *args], capture_output=True, check=True)
    return proc, f"127.0.0.1:{port}"


def bench(endpoint: str, mode: str, cert: tuple[str, str], args) -> dict:
    argv = [sys.executable, "-m", "trietcd.tools.benchmark", f"--endpoints={endpoint}", f"--conns={args.conns}",
            f"--clients={args.clients}", "--no-progress", "--json"]
    if mode == "auth":
        argv.append("--user=bench:benchpw")
    if mode == "tls":
        argv.append(f"--cacert={cert[0]}")
    argv += ["put", "--key-size=8", "--val-size=256", "--sequential-keys", f"--total={args.total}"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=_repo_root(), timeout=900)
    line = next((json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")), None)
    if line is None:
        raise RuntimeError(out.stderr[-2000:])
    return {"rate": line["requests_per_sec"], "p99_ms": line["percentiles_s"]["99"] * 1e3,
            "failed": line["calls_failed"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=20000)
    parser.add_argument("--conns", type=int, default=10)
    parser.add_argument("--clients", type=int, default=100)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="secure-put-")
    try:
        cert = make_cert(work)
        results = {}
        for mode in MODES:
            for kind in ("etcd", "trietcd"):
                proc, endpoint = start(kind, mode, work, cert)
                try:
                    results[kind, mode] = bench(endpoint, mode, cert, args)
                finally:
                    _stop(proc)
        print(f"put, {args.conns} conns / {args.clients} clients, {args.total} puts of 256 B")
        print("| mode | etcd 3.5.1 | trietcd | trietcd/etcd | etcd vs its plain | trietcd vs its plain |")
        print("| --- | --- | --- | --- | --- | --- |")
        for mode in MODES:
            e, t = results["etcd", mode], results["trietcd", mode]
            ep, tp = results["etcd", "plain"], results["trietcd", "plain"]
            print(f"| {mode} | {e['rate']:,.0f} req/s (p99 {e['p99_ms']:.1f} ms) | {t['rate']:,.0f} req/s "
                  f"(p99 {t['p99_ms']:.1f} ms) | {t['rate'] / e['rate']:.2f} | {e['rate'] / ep['rate']:.2f} | "
                  f"{t['rate'] / tp['rate']:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
