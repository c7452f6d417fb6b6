"""The `trietcd` command: configuration in, one member served until a signal.

Everything the process needs is composed here, and only here: the member,
the gRPC services, the HTTP apps and the listeners. Layers below never read
flags, the environment or signals.
"""

from __future__ import annotations

import contextlib
import functools
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
    logger.set_output(_log_output(config.log_outputs))
    bridge_stdlib_logging(logger)
    now = _now()
    for line in config.log:
        text = config_mod.render_line(line, now)
        for name in line.outputs:
            out = _log_output((name,))
            out.write(text)
            out.flush()
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


def _log_output(outputs):
    # etcd's --log-outputs: "default" and "stderr" are stderr; a path is a file.
    name = outputs[0] if outputs else "default"
    if name in ("default", "stderr"):
        return sys.stderr
    if name == "stdout":
        return sys.stdout
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
    from trietcd.api.http import http_app, metrics_app
    from trietcd.metrics import default_registry
    from trietcd.peer import peer_http_app
    from trietcd.server.member import Member
    from trietcd.wire.conn import ConnectionSet
    from trietcd.wire.h2_conn import H2Limits
    from trietcd.wire import http1
    from trietcd.wire.listener import serve_url

    member = Member(config, log=logger)
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
    client_app = http_app(
        gateway=gateway_app(registry, max_recv_message_bytes=limits.max_recv_message_bytes),
        health=member.health,
        version=member.version_info,
        metrics=metrics,
        cors=config.cors,
    )
    client_tls = _server_context(config.client_transport_security)
    peer_tls = _server_context(config.peer_transport_security)
    # The gateway takes base64 values in JSON: room for a request etcd accepts.
    http1_limits = http1.Limits(body_bytes_max=max(4 << 20, 2 * limits.max_recv_message_bytes))
    serve = functools.partial(serve_url, h2_limits=limits, http1_limits=http1_limits, connections=connections)
    listeners = [
        functools.partial(serve, url, registry=registry, http_app=client_app, ssl_context=client_tls)
        for url in config.listen_client_urls
    ]
    listeners += [
        functools.partial(serve, url, registry=registry, http_app=peer_http_app(member), ssl_context=peer_tls)
        for url in config.listen_peer_urls
    ]
    listeners += [
        functools.partial(
            serve, url, registry=None, http_app=metrics_app(health=member.health, metrics=metrics),
            ssl_context=client_tls if url.startswith("https") else None,
        )
        for url in config.listen_metrics_urls
    ]
    logger.info(
        "starting an etcd server",
        caller="embed/etcd.go",
        **{
            "etcd-version": member.version,
            "name": config.name,
            "data-dir": config.data_dir,
            "listen-client-urls": list(config.listen_client_urls),
            "advertise-client-urls": list(config.advertise_client_urls),
            "listen-peer-urls": list(config.listen_peer_urls),
            "initial-cluster": config.initial_cluster,
        },
    )
    logger.info(
        "starting local member",
        caller="etcdserver/raft.go",
        **{"local-member-id": f"{member.id:x}", "cluster-id": f"{member.cluster_id:x}"},
    )
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(member.run, listeners)
        yield member, addresses, functools.partial(member.stop, connections.shutdown, SHUTDOWN_GRACE_S)
        nursery.cancel_scope.cancel()


def _server_context(tls):
    if not tls.cert_file and not tls.key_file:
        return None
    from trietcd.wire.tls import server_context

    return server_context(tls.cert_file, tls.key_file, tls.trusted_ca_file, tls.client_cert_auth)
