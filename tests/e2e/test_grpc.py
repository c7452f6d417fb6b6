"""grpcio and the JSON gateway against real etcd 3.5.1 and trietcd, side by side.

Every test makes the same calls on both servers and compares status codes,
messages and responses; only member/cluster IDs and the raft term (derived
from random ports / not part of the data) are masked. Both servers run with
--max-request-bytes 10000 so the size limits are cheap to reach.

TRIETCD_E2E_CMD overrides the trietcd command; pointing it at the etcd binary
is the self-test of this module.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc")

from proto.etcdserverpb import rpc_pb2  # noqa: E402


from tests.e2e import servers as _conftest  # noqa: E402

TRIETCD_CMD = _conftest.TRIETCD_CMD
ETCD_CMD = _conftest.ETCD_CMD
MAX_REQUEST_BYTES = 10_000
# etcd lets gRPC receive this much more than --max-request-bytes, so that a
# request a bit too large gets etcd's own error instead of grpc-go's.
GRPC_OVERHEAD_BYTES = 512 * 1024
CALL_TIMEOUT_S = 5


def _identity(data: bytes) -> bytes:
    return data


class Side:
    def __init__(self, server) -> None:
        self.server = server
        self.channel = grpc.insecure_channel(server.endpoint)
        self.ids: dict[int, str] = {}

    def unary(self, path: str, request, response_type, *, wait_for_ready: bool = False):
        call = self.channel.unary_unary(
            path, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString,
        )
        return call(request, timeout=CALL_TIMEOUT_S, wait_for_ready=wait_for_ready)

    def raw(self, path: str, data: bytes) -> tuple[str, str]:
        """Call with bytes as they are; the outcome as (code, message)."""
        call = self.channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)
        try:
            reply = call(data, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            return exc.code().name, exc.details()
        return "OK", reply.hex()

    def learn_ids(self) -> None:
        # From a Range header: it is the call every test here depends on anyway.
        reply = self.unary("/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"ids?"), rpc_pb2.RangeResponse)
        self.ids = {reply.header.member_id: "<MEMBER_ID>", reply.header.cluster_id: "<CLUSTER_ID>"}

    def http(self, method: str, path: str, body: bytes | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self.server.endpoint, timeout=CALL_TIMEOUT_S)
        try:
            connection.request(method, path, body=body)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def _start(base: Path, kind: str) -> Side:
    directory = base / kind
    directory.mkdir()
    command = ETCD_CMD if kind == "etcd" else TRIETCD_CMD
    server = _conftest.start(directory, command, "--max-request-bytes", str(MAX_REQUEST_BYTES))
    return Side(server)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("grpc")
    sides, errors = [], []
    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(_start, base, kind) for kind in ("etcd", "trietcd")]:
            try:
                sides.append(future.result())
            except Exception as exc:  # noqa: BLE001 - stop the other one, then fail
                errors.append(exc)
    try:
        if errors:
            raise errors[0]
        for side in sides:
            _wait_serving(side)
            side.learn_ids()
        yield tuple(sides)
    finally:
        for side in sides:
            side.channel.close()
            side.server.stop(signal.SIGKILL)


def _wait_serving(side: Side) -> None:
    # The port accepts before the member has a leader; etcd queues the first
    # requests until then. Any answer at all means the server is serving.
    try:
        side.unary("/etcdserverpb.KV/Range", rpc_pb2.RangeRequest(key=b"ready?"), rpc_pb2.RangeResponse,
                   wait_for_ready=True)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise


def both(pair, fn):
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, pair))


def normalized(side: Side, message) -> str:
    """The response as text, with the header's IDs and term masked."""
    from google.protobuf import text_format

    copy = type(message)()
    copy.CopyFrom(message)
    if copy.HasField("header"):
        copy.header.raft_term = 0
    text = text_format.MessageToString(copy, as_utf8=True)
    for value, placeholder in side.ids.items():
        text = re.sub(rf"\b{value}\b", placeholder, text)
    return text


def outcome(side: Side, path: str, request, response_type) -> str:
    try:
        return "OK\n" + normalized(side, side.unary(path, request, response_type))
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"


def compare_calls(pair, *calls) -> None:
    for path, request in calls:
        response_type = _RESPONSES[path]
        expected, got = both(pair, lambda s: outcome(s, path, request, response_type))
        assert got == expected, f"{path} {request}\netcd:\n{expected}\ntrietcd:\n{got}"


_RESPONSES = {
    "/etcdserverpb.KV/Put": rpc_pb2.PutResponse,
    "/etcdserverpb.KV/Range": rpc_pb2.RangeResponse,
    "/etcdserverpb.KV/DeleteRange": rpc_pb2.DeleteRangeResponse,
}
PUT, RANGE, DELETE = "/etcdserverpb.KV/Put", "/etcdserverpb.KV/Range", "/etcdserverpb.KV/DeleteRange"


# ---- KV round trip -----------------------------------------------------------


def test_kv_round_trip(pair):
    compare_calls(
        pair,
        (PUT, rpc_pb2.PutRequest(key=b"rt/a", value=b"1")),
        (PUT, rpc_pb2.PutRequest(key=b"rt/b", value=b"\x00\xff binary")),
        (PUT, rpc_pb2.PutRequest(key=b"rt/a", value=b"2", prev_kv=True)),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/a")),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/", range_end=b"rt0")),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/", range_end=b"rt0", limit=1)),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/", range_end=b"rt0", count_only=True)),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/", range_end=b"rt0", keys_only=True,
                                     sort_order=rpc_pb2.RangeRequest.DESCEND)),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/a", revision=1)),
        (DELETE, rpc_pb2.DeleteRangeRequest(key=b"rt/", range_end=b"rt0", prev_kv=True)),
        (RANGE, rpc_pb2.RangeRequest(key=b"rt/", range_end=b"rt0")),
        (DELETE, rpc_pb2.DeleteRangeRequest(key=b"rt/a")),
    )


def test_kv_errors(pair):
    compare_calls(
        pair,
        (PUT, rpc_pb2.PutRequest(key=b"", value=b"1")),
        (RANGE, rpc_pb2.RangeRequest(key=b"")),
        (RANGE, rpc_pb2.RangeRequest(key=b"x", revision=1_000_000)),
        (DELETE, rpc_pb2.DeleteRangeRequest(key=b"")),
        (PUT, rpc_pb2.PutRequest(key=b"err", value=b"1", lease=123)),
        (PUT, rpc_pb2.PutRequest(key=b"err-missing", ignore_value=True)),
    )


# ---- raw calls: unknown methods, malformed messages, sizes ---------------------


def compare_raw(pair, path: str, data: bytes) -> tuple[str, str]:
    expected, got = both(pair, lambda s: s.raw(path, data))
    assert got == expected, f"{path} {data[:40]!r}: etcd {expected}, trietcd {got}"
    return expected


@pytest.mark.parametrize("path", ["/etcdserverpb.KV/Frob", "/etcdserverpb.Nope/Range", "/a/b", "/etcdserverpb.KV/Range/x"])
def test_unknown_method(pair, path):
    code, _ = compare_raw(pair, path, b"")
    assert code == "UNIMPLEMENTED"


# grpc-go answers a path without a second '/' with RESOURCE_EXHAUSTED.
@pytest.mark.parametrize("path", ["/nope", "nope"])
def test_malformed_method_name(pair, path):
    compare_raw(pair, path, b"")


# Truncated messages: grpc-go reports Go's io.ErrUnexpectedEOF text.
@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a", b"\x0a\x01a\x80"], ids=bytes.hex)
def test_truncated_protobuf(pair, data):
    code, message = compare_raw(pair, RANGE, data)
    assert (code, message) == ("INTERNAL", "grpc: error unmarshalling request: unexpected EOF")


# Other malformed messages: the code and grpc-go's prefix must match; the
# rest of the text is the Go protobuf library's wording.
@pytest.mark.parametrize("data", [b"\x08", b"\x07", b"\x0a\x01a\x1d\x00"], ids=bytes.hex)
def test_malformed_protobuf(pair, data):
    (expected_code, expected), (code, message) = both(pair, lambda s: s.raw(RANGE, data))
    assert expected_code == "INTERNAL", expected
    assert (code, message.partition(": ")[0]) == (expected_code, expected.partition(": ")[0]), (expected, message)


def test_request_over_max_request_bytes(pair):
    # Within gRPC's limit but over --max-request-bytes: etcd's own error.
    request = rpc_pb2.PutRequest(key=b"big", value=b"x" * (MAX_REQUEST_BYTES * 2))
    code, message = compare_raw(pair, PUT, request.SerializeToString())
    assert (code, message) == ("INVALID_ARGUMENT", "etcdserver: request is too large")


def test_request_over_grpc_limit(pair):
    # Over --max-request-bytes + 512 KiB: grpc-go refuses the message itself.
    data = rpc_pb2.PutRequest(key=b"huge", value=b"x" * (MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES)).SerializeToString()
    code, message = compare_raw(pair, PUT, data)
    assert code == "RESOURCE_EXHAUSTED"
    assert message == f"grpc: received message larger than max ({len(data)} vs. {MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES})"


def test_request_just_under_max_request_bytes(pair):
    request = rpc_pb2.PutRequest(key=b"fits", value=b"x" * (MAX_REQUEST_BYTES - 100))
    compare_calls(pair, (PUT, request), (DELETE, rpc_pb2.DeleteRangeRequest(key=b"fits")))


# ---- Watch ---------------------------------------------------------------------


def watch_transcript(side: Side) -> str:
    """Create a watch on one key, write it twice, read the three responses.
    The writes happen even when the watch fails, so that both servers stay
    at the same revision for the tests after this one."""
    call = side.channel.stream_stream(
        "/etcdserverpb.Watch/Watch",
        request_serializer=rpc_pb2.WatchRequest.SerializeToString,
        response_deserializer=rpc_pb2.WatchResponse.FromString,
    )
    create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"watched", prev_kv=True))
    responses = call(iter([create]), timeout=CALL_TIMEOUT_S)
    lines = []
    failed = False
    try:
        for value in (None, b"1", b"2"):
            if value is not None:
                side.unary(PUT, rpc_pb2.PutRequest(key=b"watched", value=value), rpc_pb2.PutResponse)
            if failed:
                continue
            try:
                lines.append(normalized(side, next(responses)))
            except grpc.RpcError as exc:
                lines.append(f"{exc.code().name}: {exc.details()}")
                failed = True
    finally:
        responses.cancel()
    return "\n".join(lines)


def test_watch(pair):
    expected, got = [watch_transcript(side) for side in pair]
    assert "created: true" in expected
    assert got == expected, f"etcd:\n{expected}\ntrietcd:\n{got}"


# ---- JSON gateway ----------------------------------------------------------------


def normalized_http(side: Side, method: str, path: str, body: bytes | None) -> str:
    status, headers, payload = side.http(method, path, body)
    lines = [f"{status}"]
    for name, value in headers:
        if name.lower() == "date":
            value = "<DATE>"
        elif name.lower() == "content-length":
            # IDs have different widths on the two sides; the length must be right.
            assert int(value) == len(payload), f"Content-Length {value} for {len(payload)} bytes"
            value = "<LENGTH>"
        lines.append(f"{name}: {value}")
    text = payload.decode("utf-8", "replace")
    for value, placeholder in side.ids.items():
        text = text.replace(f'"{value}"', f'"{placeholder}"')
    text = re.sub(r'"raft_term":"\d+"', '"raft_term":"<TERM>"', text)
    return "\n".join(lines) + "\n\n" + text


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


GATEWAY = {
    "put": [("POST", "/v3/kv/put", {"key": _b64("gw/k"), "value": _b64("v")})],
    "put-prev-kv": [("POST", "/v3/kv/put", {"key": _b64("gw/p"), "value": _b64("1")}),
                    ("POST", "/v3/kv/put", {"key": _b64("gw/p"), "value": _b64("2"), "prev_kv": True})],
    "range": [("POST", "/v3/kv/put", {"key": _b64("gw/r"), "value": _b64("v")}),
              ("POST", "/v3/kv/range", {"key": _b64("gw/r")})],
    "range-prefix": [("POST", "/v3/kv/range", {"key": _b64("gw/"), "range_end": _b64("gw0"), "keys_only": True})],
    "range-missing": [("POST", "/v3/kv/range", {"key": _b64("gw/none")})],
    "range-limit-count": [("POST", "/v3/kv/range", {"key": _b64("gw/"), "range_end": _b64("gw0"), "limit": 1}),
                          ("POST", "/v3/kv/range", {"key": _b64("gw/"), "range_end": _b64("gw0"), "count_only": True})],
    "deleterange": [("POST", "/v3/kv/put", {"key": _b64("gw/d"), "value": _b64("v")}),
                    ("POST", "/v3/kv/deleterange", {"key": _b64("gw/d"), "prev_kv": True})],
    "empty-key": [("POST", "/v3/kv/range", {"key": ""})],
    "future-rev": [("POST", "/v3/kv/range", {"key": _b64("gw/r"), "revision": 1_000_000})],
    "bad-json": [("POST", "/v3/kv/range", b"garbage")],
    "wrong-method": [("GET", "/v3/kv/range", None)],
}


@pytest.mark.parametrize("name", list(GATEWAY))
def test_gateway(pair, name):
    for method, path, body in GATEWAY[name]:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        expected, got = both(pair, lambda s: normalized_http(s, method, path, data))
        assert got == expected, f"{method} {path} {data!r}\netcd:\n{expected}\n\ntrietcd:\n{got}"
