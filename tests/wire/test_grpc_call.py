"""gRPC semantics without IO: registry, request heads, timeouts, messages, trailers."""

from __future__ import annotations

import hpack
import pytest

from proto.etcdserverpb import rpc_pb2
from trietcd.wire import grpc_call as g
from trietcd.wire.grpc_call import GrpcError, Registry, Status


async def _range(request, call):
    return rpc_pb2.RangeResponse()


def _kv_registry() -> Registry:
    reg = Registry()
    reg.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Range": _range})
    return reg


def test_registry_methods_come_from_the_descriptor():
    reg = _kv_registry()
    m = reg.lookup("/etcdserverpb.KV/Range")
    assert m.handler is _range
    assert m.request_type.DESCRIPTOR.full_name == "etcdserverpb.RangeRequest"
    assert m.response_type.DESCRIPTOR.full_name == "etcdserverpb.RangeResponse"
    assert (m.client_streaming, m.server_streaming) == (False, False)
    assert reg.lookup("/etcdserverpb.KV/Nope") is None


async def test_methods_without_handler_are_unimplemented():
    m = _kv_registry().lookup("/etcdserverpb.KV/Txn")
    with pytest.raises(GrpcError) as exc:
        await m.handler(rpc_pb2.TxnRequest(), None)
    assert (exc.value.code, exc.value.message) == (Status.UNIMPLEMENTED, "method Txn not implemented")


def test_registry_rejects_handlers_for_unknown_methods():
    with pytest.raises(AssertionError):
        Registry().add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Rangee": _range})


def test_streaming_flags():
    reg = Registry()
    reg.add_service(rpc_pb2.DESCRIPTOR.services_by_name["Watch"], {})
    reg.add_service(rpc_pb2.DESCRIPTOR.services_by_name["Maintenance"], {})
    w = reg.lookup("/etcdserverpb.Watch/Watch")
    assert (w.client_streaming, w.server_streaming) == (True, True)
    s = reg.lookup("/etcdserverpb.Maintenance/Snapshot")
    assert (s.client_streaming, s.server_streaming) == (False, True)


@pytest.mark.parametrize(
    "path, code, message",
    [
        ("/etcdserverpb.Foo/Bar", Status.UNIMPLEMENTED, "unknown service etcdserverpb.Foo"),
        ("/etcdserverpb.KV/Bar", Status.UNIMPLEMENTED, "unknown method Bar for service etcdserverpb.KV"),
        ("etcdserverpb.KV/Bar", Status.UNIMPLEMENTED, "unknown method Bar for service etcdserverpb.KV"),
        ("//Bar", Status.UNIMPLEMENTED, "unknown service "),
        # grpc-go 1.41 (etcd 3.5.1) answers a name without a slash with RESOURCE_EXHAUSTED.
        ("nonsense", Status.RESOURCE_EXHAUSTED, 'malformed method name: "nonsense"'),
        ("/", Status.RESOURCE_EXHAUSTED, 'malformed method name: "/"'),
        ("/nope", Status.RESOURCE_EXHAUSTED, 'malformed method name: "/nope"'),
    ],
)
def test_unknown_method_errors_match_grpc_go(path, code, message):
    err = _kv_registry().unknown_method_error(path)
    assert (err.code, err.message) == (code, message)


@pytest.mark.parametrize(
    "value, seconds",
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"7u", 7e-6), (b"99999999n", 0.099999999)],
)
def test_timeouts(value, seconds):
    assert g.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"1", b"1x", b"123456789S", b"-1S", b"1.5S"])
def test_bad_timeouts(value):
    with pytest.raises(ValueError):
        g.parse_timeout(value)


def test_request_head():
    headers = (
        (b":method", b"POST"),
        (b":path", b"/a.B/C"),
        (b"content-type", b"application/grpc+proto"),
        (b"grpc-timeout", b"5S"),
        (b"token", b"abc"),
        (b"user-agent", b"grpc-go/1.41"),
        (b"te", b"trailers"),
    )
    head = g.parse_request_head(headers)
    assert (head.path, head.timeout_s, head.error, head.bad_content_type) == ("/a.B/C", 5.0, None, False)
    assert g.metadata_of(headers) == {"token": "abc", "user-agent": "grpc-go/1.41"}


def test_request_head_problems():
    assert g.parse_request_head(((b":path", b"/a/b"), (b"content-type", b"text/plain"))).bad_content_type
    head = g.parse_request_head(((b":path", b"/a/b"), (b"content-type", b"application/grpc"), (b"grpc-timeout", b"xx")))
    assert head.error.code == Status.INTERNAL and head.error.message.startswith("malformed grpc-timeout: ")
    head = g.parse_request_head(((b":path", b"/a/b"), (b"content-type", b"application/grpc"), (b"grpc-encoding", b"gzip")))
    assert head.error.code == Status.UNIMPLEMENTED
    assert head.error.message == 'grpc: Decompressor is not installed for grpc-encoding "gzip"'


def test_message_reader_reassembles_split_messages():
    stream = g.frame_message(b"hello") + g.frame_message(b"") + g.frame_message(b"x" * 300)
    for step in (1, 2, 7, len(stream)):
        reader = g.MessageReader(1000)
        got = []
        for i in range(0, len(stream), step):
            got += reader.feed(stream[i : i + step])
        assert got == [b"hello", b"", b"x" * 300]
        assert reader.buffered_bytes() == 0


def test_message_reader_limits_and_flags():
    with pytest.raises(GrpcError) as exc:
        g.MessageReader(10).feed(b"\x00\x00\x00\x00\x0b")  # refused from the prefix alone
    assert exc.value.code == Status.RESOURCE_EXHAUSTED
    assert exc.value.message == "grpc: received message larger than max (11 vs. 10)"
    with pytest.raises(GrpcError) as exc:
        g.MessageReader(10).feed(b"\x01\x00\x00\x00\x01a")
    assert (exc.value.code, exc.value.message) == (
        Status.INTERNAL,
        "grpc: compressed flag set with identity or empty encoding",
    )
    with pytest.raises(GrpcError) as exc:
        g.whole_message(b"\x02\x00\x00\x00\x01a", 10)
    assert exc.value.message == "grpc: received unexpected payload format 2"
    assert g.whole_message(b"\x00\x00\x00\x00\x01a", 10) == [b"a"]
    assert g.whole_message(b"\x00\x00\x00\x00\x02a", 10) is None


@pytest.mark.parametrize(
    "message, encoded",
    [
        ("plain text: ok", b"plain text: ok"),
        ("100%", b"100%25"),
        ("ü\n", b"%C3%BC%0A"),
    ],
)
def test_percent_encoding(message, encoded):
    assert g.percent_encode(message) == encoded
    assert g.percent_decode(encoded) == message


def test_response_blocks_decode_as_expected():
    d = hpack.Decoder()
    assert d.decode(g.RESPONSE_HEADERS, raw=True) == [(b":status", b"200"), (b"content-type", b"application/grpc")]
    assert d.decode(g.OK_TRAILERS, raw=True) == [(b"grpc-status", b"0")]
    block = g.trailers_only_block(Status.NOT_FOUND, "no ü", {"X-Trace": "1"})
    assert d.decode(block, raw=True) == [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"5"),
        (b"grpc-message", b"no %C3%BC"),
        (b"x-trace", b"1"),
    ]
    assert len(d.header_table.dynamic_entries) == 0
