"""`/members/hashkv` on the peer port, both ends (etcd 3.5.1 `etcdserver/corrupt.go`): how members compare
their key spaces for the corruption checks (trietcd/server/corrupt.py).

The request is a GET whose body is a JSON HashKVRequest (`{"revision":N}`, Go's encoding/json rules); the
answer is a JSON HashKVResponse with only the header's revision, the hash and the compacted revision, integers
as JSON numbers and zero fields left out, or a 400 with the error's text.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse

import trio

from trietcd.mvcc import CompactedError, FutureRevError
from trietcd.server.corrupt import PeerHash, PeerHashError
from trietcd.wire.http1 import Response

__all__ = ["PATH", "hash_kv_response", "fetch_hash_kv"]

PATH = "/members/hashkv"
_INT64 = (-(1 << 63), (1 << 63) - 1)
_TEXT_HEADERS = (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
_RESPONSE_BYTES_MAX = 1 << 16


def _bad_request(text: str) -> Response:
    return Response(400, _TEXT_HEADERS, text.encode() + b"\n")


def parse_request(body: bytes) -> int:
    """The revision of a HashKVRequest in JSON as Go's json.Unmarshal reads it into the struct (field names
    matched without regard to case, unknown ones ignored, null leaving the field alone); ValueError otherwise."""
    def no_constants(name):
        raise ValueError(name)

    obj = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    if obj is None:
        return 0
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    revision = 0
    for key, value in obj.items():
        if key.lower() != "revision" or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not _INT64[0] <= value <= _INT64[1]:
            raise ValueError("revision is not an int64")
        revision = value
    return revision


def hash_kv_response(server, method: str, body: bytes) -> Response:
    if method != "GET":
        return Response(405, (("Allow", "GET"), *_TEXT_HEADERS), b"Method Not Allowed\n")
    try:
        revision = parse_request(body)
    except ValueError:
        server.log.warn("failed to unmarshal request", caller="etcdserver/corrupt.go")
        return _bad_request("error unmarshalling request")
    try:
        h, rev, compact_rev = server.store.hash_kv(revision)
    except (CompactedError, FutureRevError) as exc:
        server.log.warn("failed to get hashKV", caller="etcdserver/corrupt.go",
                        **{"requested-revision": revision, "error": str(exc)})
        return _bad_request(str(exc))
    parts = []
    if rev:
        parts.append('"header":{"revision":%d}' % rev)
    else:
        parts.append('"header":{}')
    if h:
        parts.append('"hash":%d' % h)
    if compact_rev:
        parts.append('"compact_revision":%d' % compact_rev)
    headers = (("Content-Type", "application/json"), ("X-Etcd-Cluster-Id", f"{server.cluster_id:x}"))
    return Response(200, headers, ("{" + ",".join(parts) + "}").encode())


async def fetch_hash_kv(url: str, revision: int, *, ssl_context: ssl.SSLContext | None = None) -> PeerHash:
    """Asks the peer at `url` (its peer URL) for its hash at `revision`; raises PeerHashError (compacted or
    future as etcd tells them apart: by the text of a 400) or OSError."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    body = b"{}" if not revision else b'{"revision":%d}' % revision
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: {u.netloc}\r\nUser-Agent: Go-http-client/1.1\r\n"
        f"Content-Length: {len(body)}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ).encode() + body
    stream = await trio.open_tcp_stream(host, port)
    if u.scheme == "https":
        stream = trio.SSLStream(stream, ssl_context or ssl.create_default_context(), server_hostname=host)
    async with stream:
        await stream.send_all(request)
        data = bytearray()
        while len(data) < _RESPONSE_BYTES_MAX:
            chunk = await stream.receive_some(1 << 14)
            if not chunk:
                break
            data += chunk
    head, sep, payload = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        raise PeerHashError("malformed HTTP response")
    status_line = head.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    text = payload.decode(errors="replace")
    if status != 200:
        if status == 400 and str(CompactedError()) in text:
            raise PeerHashError(str(CompactedError()), compacted=True)
        if status == 400 and str(FutureRevError()) in text:
            raise PeerHashError(str(FutureRevError()), future=True)
        raise PeerHashError(f"unknown error: {text}")
    try:
        obj = json.loads(text)
        header = obj.get("header") or {}
        return PeerHash(member_id=int(header.get("member_id", 0)), revision=int(header.get("revision", 0)),
                        hash=int(obj.get("hash", 0)), compact_revision=int(obj.get("compact_revision", 0)))
    except (ValueError, AttributeError, TypeError) as exc:
        raise PeerHashError(f"invalid hash kv response: {exc}") from None
