"""The `trietcd` command: configuration in, one member served until a signal.

Everything the process needs is composed here, and only here: the member,
the gRPC services, the HTTP apps and the listeners. Layers below never read
flags, the environment or signals.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import sys

import trio

from trietcd import config as config_mod
from trietcd.config.host import detect_default_host
from trietcd.log import bridge_stdlib_logging, logger
from trietcd.server.errors import BootstrapError
from trietcd.wire.listener import ListenError

__all__ = ["main", "open_member", "serve"]

# etcd adds this much to --max-request-bytes for the gRPC receive limit, so
# that an oversized request reaches the server and gets etcd's own error.
GRPC_OVERHEAD_BYTES = 512 * 1024
# etcd's default is unlimited; every client-controlled quantity here has a bound.
MAX_CONCURRENT_STREAMS_CAP = 10_000
# How long in-flight calls may run after SIGTERM before they are cut.
SHUTDOWN_GRACE_S = 5.0
# The process' cyclic garbage collector: CPython's defaults (700, 10, 10) collect the young generation every
# 700 net allocations, and full collections walk every object of the key index, the raft log and the page
# cache: ~10% of the CPU of a put-heavy load at 100k keys, and pauses that grow with the data. Objects a
# member keeps are rarely in cycles; these collect young garbage ~70x less often and the whole heap rarely.
GC_THRESHOLDS = (50_000, 20, 100)
# Go's names for the signals, as etcd logs them.
_GO_SIGNAL_NAMES = {signal.SIGINT: "interrupt", signal.SIGTERM: "terminated"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        config = config_mod.parse(
            argv, os.environ, argv0=sys.argv[0], default_host=detect_default_host()
        )
    except config_mod.ConfigError as exc:
        sys.stderr.write(exc.render())
        sys.stderr.flush()
        sys.exit(exc.exit_code)
    logger.set_level(config.log_level)
    logger.set_outputs([_log_output((name,), config) for name in config.log_outputs or ("default",)])
    bridge_stdlib_logging(logger)
    now = _now()
    for line in config.log:
        text = config_mod.render_line(line, now)
        for name in line.outputs:
            out = _log_output((name,))
            out.write(text)
            out.flush()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        signum = trio.run(serve, config)
    except* (ListenError, BootstrapError) as group:
        # A listener that cannot bind: etcd logs it as fatal and exits 1.
        error = str(_first_leaf(group))
        logger.log("warn", "failed to start etcd", caller="etcdmain/etcd.go:145", error=error)
        logger.log("fatal", "discovery failed", caller="etcdmain/etcd.go:203", error=error)
        sys.exit(1)
    if signum is not None:
        # Like etcd, after a graceful stop the process ends by the signal it
        # got, so supervisors see "killed by SIGTERM", not an exit code.
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _log_output(outputs, config=None):
    # etcd's --log-outputs: "default" and "stderr" are stderr; a path is a file. systemd/journal: stderr too,
    # which journald collects from a unit (trietcd does not speak the journal's protocol).
    name = outputs[0] if outputs else "default"
    if name in ("default", "stderr", "systemd/journal"):
        return sys.stderr
    if name == "stdout":
        return sys.stdout
    if config is not None and config.enable_log_rotation:
        import json

        from trietcd.log import RotatingFile

        return RotatingFile(name, json.loads(config.log_rotation_config_json))
    return _open_log_file(name)


@functools.cache
def _open_log_file(path: str):
    return open(path, "a", buffering=1)


def _now() -> float:
    import time

    return time.time()


async def serve(config, *, task_status=trio.TASK_STATUS_IGNORED) -> int | None:
    """Serves until SIGINT or SIGTERM; returns the signal that stopped it."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_member(config) as (member, addresses, stop):
            task_status.started((member, addresses))
            # What starting made (the key index, caches, modules) stays: collections no longer walk it.
            gc.freeze()
            async for signum in signals:
                logger.info(
                    "received signal; shutting down",
                    caller="osutil/interrupt_unix.go",
                    signal=_GO_SIGNAL_NAMES.get(signum, str(signum)),
                )
                await stop()
                return signum
    return None


@contextlib.asynccontextmanager
async def open_member(config):
    """The member of `config` with all its listeners, served while the block runs.

    Yields (member, addresses, stop): `addresses` are the bound listener addresses in the order of
    listen-client-urls, listen-peer-urls, listen-metrics-urls; `await stop()` is etcd's graceful stop.
    Leaving the block without it cancels the member (its backend is still closed).
    """
    from trietcd.api import build_registry
    from trietcd.api.gateway import gateway_app
    from trietcd.api.health import Probes
    from trietcd.api.http import http_app, metrics_app
    from trietcd.metrics import default_registry
    from trietcd.peer import peer_http_app
    from trietcd.peer.hashkv import fetch_hash_kv
    from trietcd.server.member import Member
    from trietcd.wire.conn import ConnectionSet
    from trietcd.wire.h2_conn import H2Limits
    from trietcd.wire import http1
    from trietcd.wire.listener import serve_url

    initialized = os.path.isdir(config.wal_dir or os.path.join(config.data_dir, "member", "wal"))
    member = Member(config, log=logger)
    member.peer_hash_kv = functools.partial(fetch_hash_kv, ssl_context=_peer_client_tls(config))
    registry = build_registry(member)
    connections = ConnectionSet()
    limits = H2Limits(
        max_recv_message_bytes=config.max_request_bytes + GRPC_OVERHEAD_BYTES,
        max_concurrent_streams=min(getattr(config, "max_concurrent_streams", MAX_CONCURRENT_STREAMS_CAP),
                                   MAX_CONCURRENT_STREAMS_CAP),
        keepalive_min_time_s=config.grpc_keepalive_min_time,
        keepalive_interval_s=config.grpc_keepalive_interval,
        keepalive_timeout_s=config.grpc_keepalive_timeout,
    )
    metrics = default_registry()
    _export_grpc_metrics(metrics, member)
    probes = Probes(member, metrics)
    client_app_of = functools.partial(
        http_app,
        gateway=gateway_app(registry, max_recv_message_bytes=limits.max_recv_message_bytes),
        health=member.health,
        version=member.version_info,
        metrics=metrics,
        cors=config.cors,
        probes=probes,
        refuses_gateway_cn=lambda: config.client_transport_security.client_cert_auth and member.auth.store.enabled,
    )
    # etcd checks --host-whitelist only on requests that did not come over TLS.
    client_app = client_app_of(host_whitelist=config.host_whitelist)
    client_tls_app = client_app_of()
    # Peer first: etcd sets up its peer listeners first, so their error is the one reported.
    peer_tls = _server_tls(config, peer=True)
    client_tls = _server_tls(config, peer=False)
    metrics_tls = _metrics_tls(config, client_tls)
    # The gateway takes base64 values in JSON: room for a request etcd accepts.
    http1_limits = http1.Limits(body_bytes_max=max(4 << 20, 2 * limits.max_recv_message_bytes))
    serve = functools.partial(serve_url, h2_limits=limits, http1_limits=http1_limits, connections=connections)
    listeners = [
        functools.partial(serve, url, registry=registry, ssl_context=client_tls,
                          http_app=client_tls_app if url.startswith(("https", "unixs")) else client_app)
        for url in config.listen_client_urls
    ]
    listeners += [
        functools.partial(serve, url, registry=registry, http_app=peer_http_app(member), ssl_context=peer_tls)
        for url in config.listen_peer_urls
    ]
    listeners += [
        functools.partial(
            serve, url, registry=None, http_app=metrics_app(health=member.health, metrics=metrics, probes=probes),
            ssl_context=metrics_tls if url.startswith("https") else None,
        )
        for url in config.listen_metrics_urls
    ]
    logger.info("starting an etcd server", caller="embed/etcd.go:307", **_starting_fields(config, member, initialized))
    logger.info(
        "starting local member",
        caller="etcdserver/raft.go",
        **{"local-member-id": f"{member.id:x}", "cluster-id": f"{member.cluster_id:x}"},
    )
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(member.run, listeners)
        logger.info("now serving peer/client/metrics", caller="embed/etcd.go:276", **{
            "local-member-id": f"{member.id:x}",
            "initial-advertise-peer-urls": list(config.initial_advertise_peer_urls),
            "listen-peer-urls": list(config.listen_peer_urls),
            "advertise-client-urls": list(config.advertise_client_urls),
            "listen-client-urls": list(config.listen_client_urls),
            "listen-metrics-urls": list(config.listen_metrics_urls),
        })
        yield member, addresses, functools.partial(member.stop, connections.shutdown, SHUTDOWN_GRACE_S)
        nursery.cancel_scope.cancel()


def _starting_fields(config, member, initialized: bool) -> dict:
    """The fields of etcd's "starting an etcd server" line, in its order (Go's runtime fields left out)."""
    from trietcd.log import go_duration
    from trietcd.server.autocompact import parse_retention

    ms = 1_000_000
    retention = go_duration(parse_retention(config.auto_compaction_mode, config.auto_compaction_retention or "0"))
    cpus = os.cpu_count() or 1
    return {
        "etcd-version": member.version,
        "max-cpu-set": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus,
        "max-cpu-available": cpus,
        "member-initialized": initialized,
        "name": config.name,
        "data-dir": config.data_dir,
        "wal-dir": config.wal_dir,
        "wal-dir-dedicated": config.wal_dir,
        "member-dir": os.path.join(config.data_dir, "member"),
        "force-new-cluster": config.force_new_cluster,
        "heartbeat-interval": go_duration(config.heartbeat_interval * ms),
        "election-timeout": go_duration(config.election_ticks() * config.heartbeat_interval * ms),
        "initial-election-tick-advance": config.initial_election_tick_advance,
        "snapshot-count": config.snapshot_count,
        "snapshot-catchup-entries": 5000,
        "initial-advertise-peer-urls": list(config.initial_advertise_peer_urls),
        "listen-peer-urls": list(config.listen_peer_urls),
        "advertise-client-urls": list(config.advertise_client_urls),
        "listen-client-urls": list(config.listen_client_urls),
        "listen-metrics-urls": list(config.listen_metrics_urls),
        "cors": list(config.cors),
        "host-whitelist": list(config.host_whitelist),
        "initial-cluster": config.initial_cluster,
        "initial-cluster-state": config.initial_cluster_state,
        "initial-cluster-token": config.initial_cluster_token,
        "quota-size-bytes": member.quota.max_bytes,
        "pre-vote": config.pre_vote,
        "initial-corrupt-check": config.experimental_initial_corrupt_check,
        "corrupt-check-time-interval": go_duration(round(config.experimental_corrupt_check_time * 1e9)),
        "auto-compaction-mode": config.auto_compaction_mode,
        "auto-compaction-retention": retention,
        "auto-compaction-interval": retention,
        "discovery-url": config.discovery,
        "discovery-proxy": config.discovery_proxy,
        "downgrade-check-interval": go_duration(round(config.experimental_downgrade_check_time * 1e9)),
    }


def _export_grpc_metrics(metrics, member) -> None:
    """go-grpc-prometheus' families as etcd exports them: every method of the etcd services and of gRPC
    health at zero from the start (Lock and Election appear once called, as in etcd, which registers them
    after the metrics); with --metrics extensive, their handling times too. Range calls count as the mvcc
    ranges they serve."""
    from proto.etcdserverpb import rpc_pb2
    from trietcd.api.health import HEALTH_SERVICE
    from trietcd.metrics import DEFAULT_BUCKETS, register_grpc_metrics
    from trietcd.wire.conn import grpc_stats

    for service in (*rpc_pb2.DESCRIPTOR.services_by_name.values(), HEALTH_SERVICE):
        for m in service.methods:
            grpc_stats.register(f"/{service.full_name}/{m.name}", m.client_streaming, m.server_streaming)
    if member.config.metrics == "extensive":
        grpc_stats.time_handling(DEFAULT_BUCKETS)  # grpc_server_handling_seconds, as etcd adds it then
    register_grpc_metrics(metrics, grpc_stats)
    ranges = grpc_stats.methods["/etcdserverpb.KV/Range"]
    member.metrics.ranges_served = lambda: ranges.handled[0]


def _peer_client_tls(config):
    """The TLS a member uses to call its peers (etcd's peer transport): the peer certificate as client
    certificate and the peer CA; None without peer TLS files (https peers then verified by the system roots)."""
    tls = config.peer_transport_security
    if not (tls.cert_file or tls.trusted_ca_file):
        return None
    import ssl

    ctx = ssl.create_default_context(cafile=tls.trusted_ca_file or None)
    if tls.cert_file and tls.key_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.check_hostname = False  # etcd's peer transport checks the chain, not the name
    return ctx


def _metrics_tls(config, client_tls):
    """The TLS of https metrics URLs: the client settings plus the peer SAN rule, as etcd's
    metrics listener is a plain transport listener with the client TLSInfo."""
    https = [url for url in config.listen_metrics_urls if url.startswith("https:")]
    if not https:
        return None
    if client_tls is None:
        raise ListenError(f"cannot listen on TLS for {https[0].split('://', 1)[-1]}: "
                          "KeyFile and CertFile are not presented")
    return client_tls.with_client_san_check()


def _server_tls(config, *, peer: bool):
    """The TLS of the client (or peer) listeners, as etcd's embed.configure*Listeners sets it up:
    None when no certificate is given; with --auto-tls (and no certificate) etcd's self-signed pair
    under <data-dir>/fixtures/client (or peer), which replaces every other TLS setting, as in etcd."""
    import datetime

    from trietcd.config import TLSInfo
    from trietcd.wire.tls import ServerTLS, ServerTLSConfig, TLSConfigError, check_versions, self_signed_cert

    which = "peer" if peer else "client"
    info = config.peer_transport_security if peer else config.client_transport_security
    urls = config.listen_peer_urls if peer else config.listen_client_urls
    try:
        check_versions(config.tls_min_version, config.tls_max_version, config.cipher_suites)
        if info.auto_tls and not info.empty():
            logger.warn(f"ignoring {which} auto TLS since certs given", caller="embed/config.go")
        elif info.auto_tls:
            now = datetime.datetime.now(datetime.timezone.utc)
            hosts = [url.split("://", 1)[-1].split("/", 1)[0] for url in urls]
            directory = os.path.join(config.data_dir, "fixtures", which)
            cert_file, key_file, created = self_signed_cert(directory, hosts, config.self_signed_cert_validity, now)
            if created:
                not_after = now + datetime.timedelta(days=365 * config.self_signed_cert_validity)
                logger.warn("automatically generate certificates", caller="transport/listener.go",
                            **{"certificate-validity-bound-not-after": not_after.isoformat(timespec="milliseconds")})
                logger.info("created cert file", caller="transport/listener.go", path=cert_file)
                logger.info("created key file", caller="transport/listener.go", path=key_file)
            info = TLSInfo(cert_file=cert_file, key_file=key_file, client_cert_file=cert_file,
                           client_key_file=key_file)
        for url in urls:
            if url.startswith(("http:", "unix:")):
                field = {f"{which}-url": url}
                if not info.empty():
                    logger.warn("scheme is HTTP while key and cert files are present; ignoring key and cert files",
                                caller="embed/etcd.go", **field)
                if info.client_cert_auth:
                    flag = "--peer-client-cert-auth" if peer else "--client-cert-auth"
                    logger.warn(f"scheme is HTTP while {flag} is enabled; ignoring client cert auth for this URL",
                                caller="embed/etcd.go", **field)
        if info.empty():
            if any(url.startswith(("https:", "unixs:")) for url in urls):
                bad = next(url for url in urls if url.startswith(("https:", "unixs:")))
                if peer:
                    raise ListenError(f"cannot listen on TLS for {bad.split('://', 1)[-1]}: "
                                      "KeyFile and CertFile are not presented")
                raise ListenError(f"TLS key/cert (--cert-file, --key-file) must be provided for client url {bad} "
                                  "with HTTPS scheme")
            return None
        server = ServerTLS(ServerTLSConfig(
            cert_file=info.cert_file, key_file=info.key_file, trusted_ca_file=info.trusted_ca_file,
            client_cert_auth=info.client_cert_auth, crl_file=info.crl_file, allowed_cn=info.allowed_cn,
            allowed_hostname=info.allowed_hostname, cipher_suites=config.cipher_suites,
            min_version=config.tls_min_version, max_version=config.tls_max_version,
            check_client_san=peer and not info.skip_client_san_verify,
            client_cert_file=info.client_cert_file, client_key_file=info.client_key_file,
        ))
    except TLSConfigError as exc:
        raise ListenError(str(exc)) from None
    logger.info(f"starting with {which} TLS", caller="embed/etcd.go",
                **{"tls-info": f"cert = {info.cert_file}, key = {info.key_file}, client-cert={info.client_cert_file}, "
                               f"client-key={info.client_key_file}, trusted-ca = {info.trusted_ca_file}, "
                               f"client-cert-auth = {str(info.client_cert_auth).lower()}, crl-file = {info.crl_file}",
                   "cipher-suites": list(config.cipher_suites)})
    return server
