"""Transport: HTTP/2 + gRPC server (and HTTP/1.1), knowing nothing of etcd."""

from trietcd.wire.grpc_call import DEFERRED, GrpcError, Method, Registry, Status
from trietcd.wire.h2_conn import H2Limits
from trietcd.wire.conn import Call, ConnectionSet, serve_h2
from trietcd.wire.http1 import BodyWriter, HttpApp, Request, Response, StreamingBody
from trietcd.wire.listener import ListenError, serve_http1, serve_url
from trietcd.wire.tls import ServerTLS, ServerTLSConfig, TLSConfigError, self_signed_cert, server_context

__all__ = [
    "Call",
    "DEFERRED",
    "ConnectionSet",
    "GrpcError",
    "H2Limits",
    "Method",
    "Registry",
    "Status",
    "serve_h2",
    "BodyWriter",
    "HttpApp",
    "Request",
    "Response",
    "StreamingBody",
    "serve_http1",
    "serve_url",
    "ListenError",
    "server_context",
    "ServerTLS",
    "ServerTLSConfig",
    "TLSConfigError",
    "self_signed_cert",
]
