"""A gRPC server on trietcd's own HTTP/2 transport that answers KV/Put and
KV/Range with empty responses carrying a header: the transport alone, for
load measurements.

    python -m benchmarks.noop_server --listen 127.0.0.1:PORT
"""

from __future__ import annotations

import argparse

import trio

from proto.etcdserverpb import rpc_pb2
from trietcd.wire import H2Limits, Registry, serve_h2

_HEADER = rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)


async def _put(request, call):
    return rpc_pb2.PutResponse(header=_HEADER)


async def _range(request, call):
    return rpc_pb2.RangeResponse(header=_HEADER)


def registry() -> Registry:
    reg = Registry()
    reg.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Put": _put, "Range": _range})
    return reg


async def serve(host: str, port: int, limits: H2Limits, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    reg = registry()
    listeners = await trio.open_tcp_listeners(port, host=host)

    async def handle(stream: trio.SocketStream) -> None:
        host_, port_ = stream.socket.getpeername()[:2]
        await serve_h2(stream, reg, limits, peer=f"ipv4:{host_}:{port_}")

    task_status.started(listeners[0].socket.getsockname()[:2])
    await trio.serve_listeners(handle, listeners)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:23790", help="host:port")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    try:
        trio.run(serve, host, int(port), H2Limits())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
