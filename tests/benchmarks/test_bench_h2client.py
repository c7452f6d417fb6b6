"""The load generator's HTTP/2 client core against `h2` as an independent server."""

import h2.config
import h2.errors
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest

from trietcd.tools.benchmark import h2client as grpc_h2

PATH = "/etcdserverpb.KV/Put"
BLOCK = grpc_h2.encode_request_headers(PATH, "127.0.0.1:2379")


def make_pair(server_settings=None):
    client = grpc_h2.ClientConn()
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
    )
    server.initiate_connection()
    if server_settings:
        server.update_settings(server_settings)
    client.initiate()
    return client, server


def pump(client, server, one_byte_at_a_time=False):
    """Moves bytes both ways until quiet; returns (server events, finished calls)."""
    events, done = [], []
    while True:
        to_server = client.data_to_send()
        if to_server:
            events += server.receive_data(to_server)
        to_client = server.data_to_send()
        if to_client:
            if one_byte_at_a_time:
                for i in range(len(to_client)):
                    done += client.receive(to_client[i : i + 1])
            else:
                done += client.receive(to_client)
        if not to_server and not to_client:
            return events, done


def respond(server, sid, *, body=b"\x0a\x00", status="0", message="", trailers_only=False):
    if trailers_only:
        headers = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", status)]
        if message:
            headers.append(("grpc-message", message))
        server.send_headers(sid, headers, end_stream=True)
        return
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(sid, grpc_h2.grpc_message(body))
    trailers = [("grpc-status", status)]
    if message:
        trailers.append(("grpc-message", message))
    server.send_headers(sid, trailers, end_stream=True)


def test_request_header_block_decodes_to_grpc_headers():
    headers = hpack.Decoder().decode(grpc_h2.encode_request_headers(PATH, "h:1", (("Token", "abc"),)))
    assert headers == [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", PATH),
        (":authority", "h:1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("token", "abc"),
    ]


def test_request_header_block_leaves_no_dynamic_table_entries():
    decoder = hpack.Decoder()
    decoder.decode(BLOCK)
    assert len(decoder.header_table.dynamic_entries) == 0


def test_long_values_use_multi_byte_hpack_integers():
    long_path = "/" + "p" * 300
    headers = hpack.Decoder().decode(grpc_h2.encode_request_headers(long_path, "h:1"))
    assert headers[2] == (":path", long_path)


@pytest.mark.parametrize("one_byte_at_a_time", [False, True])
def test_unary_call_round_trip(one_byte_at_a_time):
    client, server = make_pair()
    message = grpc_h2.grpc_message(b"\x0a\x01k\x12\x01v")
    sid = client.start_call(BLOCK, message)
    events, done = pump(client, server)
    received = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert [e.stream_id for e in received] == [sid]
    assert dict(received[0].headers)[":path"] == PATH
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data == message
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    assert done == []
    respond(server, sid)
    _, done = pump(client, server, one_byte_at_a_time)
    assert done == [(sid, 0, "")]
    assert client.open_streams == 0


def test_error_status_and_message_are_reported():
    client, server = make_pair()
    first = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    second = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    respond(server, first, status="5", message="not found")
    respond(server, second, status="3", message="bad", trailers_only=True)
    _, done = pump(client, server)
    assert done == [(first, 5, "not found"), (second, 3, "bad")]


def test_many_calls_with_dynamic_table_responses_decode_right():
    # h2's encoder indexes response headers, so later responses are pure
    # references; the block cache must still follow changes of the table.
    client, server = make_pair()
    results = []
    for round_number in range(5):
        sids = [client.start_call(BLOCK, grpc_h2.grpc_message(b"x")) for _ in range(20)]
        pump(client, server)
        for i, sid in enumerate(sids):
            if i % 7 == 3:
                respond(server, sid, status="14", message=f"down {round_number}")
            else:
                respond(server, sid)
        results += pump(client, server)[1]
    assert len(results) == 100
    failures = [r for r in results if r[1] != 0]
    assert len(failures) == 15
    assert {r[2] for r in failures} == {f"down {n}" for n in range(5)}
    assert all(r[1] == 14 for r in failures)


def test_header_block_split_over_continuation_frames():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    big = "m" * 40000  # larger than the 16384-byte frames the client allows
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_headers(sid, [("grpc-status", "2"), ("grpc-message", big)], end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, 2, big)]


def test_reset_stream_fails_only_that_call():
    client, server = make_pair()
    first = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    second = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    server.reset_stream(first, error_code=8)
    respond(server, second)
    _, done = pump(client, server)
    assert done == [(first, -1, "stream reset by server (code 8)"), (second, 0, "")]


def test_goaway_fails_streams_above_last_stream_id_and_stops_new_calls():
    client, server = make_pair()
    sids = [client.start_call(BLOCK, grpc_h2.grpc_message(b"")) for _ in range(3)]
    pump(client, server)
    server.close_connection(error_code=0, last_stream_id=sids[0])
    _, done = pump(client, server)
    assert done == [(sids[1], -1, "refused by GOAWAY (code 0)"), (sids[2], -1, "refused by GOAWAY (code 0)")]
    assert not client.can_start_call()


def test_connection_close_fails_open_calls():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    assert client.receive(b"") == [(sid, -1, "connection closed by server")]
    assert client.closed and not client.can_start_call()


def test_missing_grpc_status_is_an_error():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    server.send_headers(sid, [(":status", "200")])
    server.send_data(sid, grpc_h2.grpc_message(b""), end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, -1, "missing grpc-status")]


def test_http_error_status_is_an_error():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    server.send_headers(sid, [(":status", "503")], end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, -1, "http status 503")]


def test_request_data_waits_for_the_servers_windows():
    client, server = make_pair({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    pump(client, server)  # the client learns the small stream window
    body = bytes(range(256)) * 4
    message = grpc_h2.grpc_message(body)
    sid = client.start_call(BLOCK, message)
    got = b""
    ended = False
    for _ in range(100):
        events, _ = pump(client, server)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                assert len(event.data) <= 100
                got += event.data
                server.acknowledge_received_data(event.flow_controlled_length, sid)
            ended = ended or isinstance(event, h2.events.StreamEnded)
        if ended:
            break
    assert ended and got == message


def test_ping_is_acknowledged():
    client, server = make_pair()
    pump(client, server)
    server.ping(b"12345678")
    events, _ = pump(client, server)
    acks = [e for e in events if isinstance(e, h2.events.PingAckReceived)]
    assert [a.ping_data for a in acks] == [b"12345678"]


def test_settings_are_applied_and_acknowledged():
    client, server = make_pair({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2})
    events, _ = pump(client, server)
    assert client.settings_received
    assert client.max_concurrent_streams == 2
    client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    assert not client.can_start_call()


def test_receive_window_is_refilled():
    client = grpc_h2.ClientConn(recv_window_refill_bytes=1000)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    client.initiate()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    window_before = server.outbound_flow_control_window
    assert window_before == 2**31 - 1  # the client opened the connection window wide
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(sid, grpc_h2.grpc_message(b"z" * 5000))
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, 0, "")]
    # The connection window came back to where it was: the client refilled it.
    assert server.outbound_flow_control_window == window_before


def test_push_promise_is_a_protocol_error():
    client, _ = make_pair()
    frame = grpc_h2.encode_frame(grpc_h2.PUSH_PROMISE, grpc_h2.FLAG_END_HEADERS, 1, b"\x00\x00\x00\x02")
    with pytest.raises(grpc_h2.ProtocolError):
        client.receive(frame)


def _request_data(events, sid):
    return b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)


def _ended(events, sid):
    return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in events)


@pytest.mark.parametrize("one_byte_at_a_time", [False, True])
def test_open_stream_carries_several_messages_both_ways(one_byte_at_a_time):
    client, server = make_pair()
    first, second = grpc_h2.grpc_message(b"one"), grpc_h2.grpc_message(b"two")
    sid = client.start_call(BLOCK, first, end_stream=False, collect=True)
    client.send_message(sid, second)
    events, _ = pump(client, server)
    assert _request_data(events, sid) == first + second and not _ended(events, sid)
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    reply = grpc_h2.grpc_message(b"a") + grpc_h2.grpc_message(b"") + grpc_h2.grpc_message(b"b" * 70)
    server.send_data(sid, reply[:9])  # messages split across DATA frames
    server.send_data(sid, reply[9:], pad_length=5)
    _, done = pump(client, server, one_byte_at_a_time)
    assert done == []
    assert client.messages == [(sid, b"a"), (sid, b""), (sid, b"b" * 70)]
    client.end_call(sid)
    events, _ = pump(client, server)
    assert _ended(events, sid)
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, 0, "")]


def test_messages_are_not_kept_for_calls_that_do_not_collect():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""))
    pump(client, server)
    respond(server, sid, body=b"\x0a\x02hi")
    _, done = pump(client, server)
    assert done == [(sid, 0, "")] and client.messages == []


def test_cancel_resets_the_stream_and_forgets_the_call():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b"x"), end_stream=False, collect=True)
    pump(client, server)
    client.cancel_call(sid)
    events, done = pump(client, server)
    resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(sid, h2.errors.ErrorCodes.CANCEL)]
    assert done == [] and client.open_streams == 0


def test_an_open_stream_waits_for_its_own_window():
    client, server = make_pair({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pump(client, server)  # settings applied: every stream may send 10 bytes
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b"12345"), end_stream=False)  # 10 bytes
    client.send_message(sid, grpc_h2.grpc_message(b"67890"))  # waits
    events, _ = pump(client, server)
    assert _request_data(events, sid) == grpc_h2.grpc_message(b"12345")
    server.acknowledge_received_data(10, sid)
    events, _ = pump(client, server)
    assert _request_data(events, sid) == grpc_h2.grpc_message(b"67890")


def test_a_response_cut_inside_a_message_is_a_failure():
    client, server = make_pair()
    sid = client.start_call(BLOCK, grpc_h2.grpc_message(b""), collect=True)
    pump(client, server)
    server.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
    server.send_data(sid, grpc_h2.grpc_message(b"whole")[:7])
    server.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    _, done = pump(client, server)
    assert done == [(sid, -1, "response ended inside a gRPC message")]


def test_tls_header_block_says_https():
    headers = hpack.Decoder().decode(grpc_h2.encode_request_headers(PATH, "h:1", tls=True))
    assert headers[1] == (":scheme", "https")
