import pytest

from trietcd.wire import http1
from trietcd.wire.http1 import (
    CLOSED,
    CONTINUE,
    NEED_DATA,
    HttpError,
    Limits,
    Request,
    Response,
    ServerConnection,
    error_response,
    split_target,
)


def feed(conn: ServerConnection, data: bytes, *, one_at_a_time: bool):
    """Feed `data` and collect events until the parser needs more or has a request."""
    events = []
    pieces = [data[i : i + 1] for i in range(len(data))] if one_at_a_time else [data]
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if isinstance(event, Request) or event is CLOSED:
                return events
    return events


def parse_one(data: bytes, *, one_at_a_time: bool, limits: Limits = Limits()) -> Request:
    conn = ServerConnection(limits, peer="ipv4:127.0.0.1:1")
    events = feed(conn, data, one_at_a_time=one_at_a_time)
    assert isinstance(events[-1], Request), events
    return events[-1]


both = pytest.mark.parametrize("one_at_a_time", [False, True], ids=["whole", "bytewise"])


@both
def test_simple_get(one_at_a_time):
    req = parse_one(b"GET /health?exclude=NOSPACE HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n",
                    one_at_a_time=one_at_a_time)
    assert req == Request("GET", "/health?exclude=NOSPACE", (("Host", "x"), ("User-Agent", "t")), b"",
                          "ipv4:127.0.0.1:1")
    assert req.header("user-agent") == "t"


@both
def test_content_length_body(one_at_a_time):
    req = parse_one(b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
                    one_at_a_time=one_at_a_time)
    assert req.body == b"hello"


@both
def test_chunked_body_with_extension_and_trailer(one_at_a_time):
    data = (b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4;ext=1\r\nhell\r\n1\r\no\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n")
    req = parse_one(data, one_at_a_time=one_at_a_time)
    assert req.body == b"hello0123456789"


@both
def test_bare_lf_lines(one_at_a_time):
    req = parse_one(b"GET /health HTTP/1.1\nHost: x\n\n", one_at_a_time=one_at_a_time)
    assert req.target == "/health"


def test_chunked_wins_over_content_length():
    data = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n")
    assert parse_one(data, one_at_a_time=False).body == b""


def respond(conn, response, date="Tue, 24 Nov 2026 06:09:15 GMT"):
    return conn.send_response(response, date=date)


def test_keep_alive_and_pipelining():
    conn = ServerConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    first = conn.next_event()
    assert first.target == "/a"
    out = respond(conn, Response(200, (("Content-Type", "application/json"),), b"{}"))
    assert out == (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   b"Date: Tue, 24 Nov 2026 06:09:15 GMT\r\nContent-Length: 2\r\n\r\n{}")
    assert conn.keep_alive
    second = conn.next_event()
    assert second.target == "/b"
    respond(conn, Response(404, (), b"x"))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def test_connection_close_request():
    conn = ServerConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    conn.next_event()
    out = respond(conn, Response(200, (), b"ok"), date="")
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nok"
    assert not conn.keep_alive
    assert conn.next_event() is CLOSED


def test_http10_closes_unless_keep_alive():
    conn = ServerConnection()
    conn.receive_data(b"GET /a HTTP/1.0\r\n\r\n")
    conn.next_event()
    assert respond(conn, Response(200, (), b"ok"), date="") == b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nok"
    assert conn.next_event() is CLOSED

    conn = ServerConnection()
    conn.receive_data(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.next_event()
    out = respond(conn, Response(200, (), b"ok"), date="")
    assert out == b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: keep-alive\r\n\r\nok"
    assert conn.next_event() is NEED_DATA


def test_head_response_has_no_body():
    conn = ServerConnection()
    conn.receive_data(b"HEAD /a HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    assert respond(conn, Response(405, (), b"Method Not Allowed\n"), date="") == (
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 19\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")


async def _never():  # an async-iterator body; only its type matters to the core
    yield b""


def test_streamed_response_is_chunked_on_http11():
    conn = ServerConnection()
    conn.receive_data(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    body = _never()
    head = respond(conn, Response(200, (("Content-Type", "application/json"),), body), date="")
    assert head == b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert conn.send_body(b'{"result":{}}\n') == b'e\r\n{"result":{}}\n\r\n'
    assert conn.send_body(b"") == b""
    assert conn.end_response() == b"0\r\n\r\n"
    assert conn.next_event() is NEED_DATA
    body.aclose().close()


def test_streamed_response_on_http10_is_close_delimited():
    conn = ServerConnection()
    conn.receive_data(b"POST /v3/watch HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.next_event()
    body = _never()
    assert respond(conn, Response(200, (), body), date="") == b"HTTP/1.0 200 OK\r\n\r\n"
    assert conn.send_body(b"abc") == b"abc"
    assert conn.end_response() == b""
    assert conn.next_event() is CLOSED
    body.aclose().close()


@both
def test_expect_continue(one_at_a_time):
    conn = ServerConnection()
    events = feed(conn, b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
                  one_at_a_time=one_at_a_time)
    assert events == [CONTINUE]
    assert http1.CONTINUE_BYTES == b"HTTP/1.1 100 Continue\r\n\r\n"
    events = feed(conn, b"ok", one_at_a_time=one_at_a_time)
    assert events[-1].body == b"ok"


def test_eof_mid_request_closes():
    conn = ServerConnection()
    conn.receive_data(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() is CLOSED


def error_of(data: bytes, limits: Limits = Limits(), one_at_a_time=False) -> HttpError:
    conn = ServerConnection(limits)
    with pytest.raises(HttpError) as info:
        feed(conn, data, one_at_a_time=one_at_a_time)
    return info.value


@pytest.mark.parametrize(
    "data, status, detail",
    [
        (b"GET /health HTTP/1.1\r\n\r\n", 400, "missing required Host header"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400, "invalid header name"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400, "malformed MIME header line"),
        (b"GET /health HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "obsolete line folding"),
        (b"GET /health\r\n\r\n", 400, "malformed request line"),
        (b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505, ""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400, ""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
         ""),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "unsupported transfer encoding"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
         "malformed chunked encoding"),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc", 400,
         "malformed chunked encoding"),
    ],
)
@both
def test_bad_requests(data, status, detail, one_at_a_time):
    err = error_of(data, one_at_a_time=one_at_a_time)
    assert (err.status, err.detail) == (status, detail)


def test_limits():
    small = Limits(head_bytes_max=100, header_count_max=3, body_bytes_max=10, chunk_line_bytes_max=8)
    assert error_of(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 200, small).status == 431
    assert error_of(b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 200 + b"\r\n\r\n", small).status == 431
    many = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: 1\r\n" * 3 + b"\r\n"
    assert error_of(many, small).status == 431
    assert error_of(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n", small).status == 413
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert error_of(chunked + b"6\r\naaaaaa\r\n6\r\n", small).status == 413
    assert error_of(chunked + b"1" + b";" * 20, small).status == 400
    # At the limits exactly, requests pass.
    req = parse_one(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789", one_at_a_time=False,
                    limits=small)
    assert req.body == b"0123456789"


def test_error_response_bytes_like_go():
    assert error_response(HttpError(400, "missing required Host header")) == (
        b"HTTP/1.1 400 Bad Request: missing required Host header\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
        b"400 Bad Request: missing required Host header")
    assert error_response(HttpError(431)) == (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Connection: close\r\n\r\n431 Request Header Fields Too Large")


def test_leading_empty_lines_are_skipped():
    req = parse_one(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", one_at_a_time=True)
    assert req.target == "/"


def test_split_target():
    assert split_target("/health?exclude=NOSPACE") == ("/health", "exclude=NOSPACE")
    assert split_target("http://x:1/health") == ("/health", "")
    assert split_target("http://x") == ("/", "")
    assert split_target("*") == ("*", "")


# -- property tests ---------------------------------------------------------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

PIPELINE = (b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            b"GET /health HTTP/1.1\nHost: x\n\n"
            b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nwxyz")


def drain(conn, pieces):
    """Requests parsed from `pieces`, answering each with an empty 200."""
    requests = []
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or event is CLOSED:
                break
            if isinstance(event, Request):
                requests.append(event)
                conn.send_response(Response(200))
    return requests


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(PIPELINE)), max_size=20))
def test_any_split_gives_the_same_requests(cuts):
    points = sorted(set(cuts)) + [len(PIPELINE)]
    pieces, start = [], 0
    for p in points:
        pieces.append(PIPELINE[start:p])
        start = p
    requests = drain(ServerConnection(), [p for p in pieces if p])
    assert [(r.method, r.target, r.body) for r in requests] == [
        ("POST", "/v3/kv/put", b"abc"), ("GET", "/health", b""), ("PUT", "/x", b"wxyz")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_never_crash(data, eof):
    conn = ServerConnection(Limits(head_bytes_max=200, body_bytes_max=100))
    try:
        drain(conn, [data, b""] if eof else [data])
    except HttpError as err:
        assert 400 <= err.status < 600
