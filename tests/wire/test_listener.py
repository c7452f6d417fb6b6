import os
import ssl
import subprocess

import grpc
import pytest
import trio
import trio.testing

from proto.etcdserverpb import rpc_pb2
from trietcd.wire import http1
from trietcd.wire.conn import ConnectionSet
from trietcd.wire.grpc_call import Registry
from trietcd.wire.h2_conn import H2Limits
from trietcd.wire.listener import PrefixedStream, parse_url, serve_http1, serve_url
from trietcd.wire.sniff import H2_PREFACE
from trietcd.wire.tls import server_context


# -- helpers ---------------------------------------------------------------------------------

async def echo_app(request: http1.Request) -> http1.Response:
    body = f"{request.method} {request.target} {len(request.body)} {request.peer.split(':')[0]}".encode()
    return http1.Response(200, (("Content-Type", "text/plain"),), body)


def kv_registry() -> Registry:
    async def range_(request, call):
        return rpc_pb2.RangeResponse(count=len(request.key), more=call.peer.startswith("ipv4:"))

    registry = Registry()
    registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Range": range_})
    return registry


async def start(nursery, url="http://127.0.0.1:0", *, registry=None, app=echo_app, ssl_context=None,
                sniff_timeout_s=10.0, limits=http1.Limits()):
    return await nursery.start(
        lambda task_status: serve_url(
            url, registry=registry, http_app=app, h2_limits=H2Limits(), ssl_context=ssl_context,
            connections=ConnectionSet(), sniff_timeout_s=sniff_timeout_s, http1_limits=limits,
            task_status=task_status,
        )
    )


async def serve_then_close(stream, app, **kwargs):
    async with stream:
        await serve_http1(stream, app, **kwargs)


async def send_ignoring_close(stream, data: bytes) -> None:
    # A memory stream reports the server's close to a send that already delivered its bytes.
    try:
        await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def read_all(stream: trio.abc.Stream) -> bytes:
    out = b""
    while True:
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            return out + b"<RST>"
        if not data:
            return out
        out += data


async def exchange(address, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(data)
        return await read_all(stream)


def grpc_range(target: str, key: bytes, credentials=None, options=()) -> rpc_pb2.RangeResponse:
    channel = (grpc.secure_channel(target, credentials, options) if credentials
               else grpc.insecure_channel(target, options))
    with channel:
        call = channel.unary_unary("/etcdserverpb.KV/Range",
                                   request_serializer=rpc_pb2.RangeRequest.SerializeToString,
                                   response_deserializer=rpc_pb2.RangeResponse.FromString)
        return call(rpc_pb2.RangeRequest(key=key), timeout=10)


# -- PrefixedStream ----------------------------------------------------------------------------

async def test_prefixed_stream_is_a_stream():
    async def maker():
        left, right = trio.testing.memory_stream_pair()
        return PrefixedStream(left, b""), right

    await trio.testing.check_half_closeable_stream(maker, None)


async def test_prefixed_stream_yields_prefix_first():
    left, right = trio.testing.memory_stream_pair()
    stream = PrefixedStream(left, b"abcdef")
    await right.send_all(b"gh")
    assert await stream.receive_some(4) == b"abcd"
    assert await stream.receive_some() == b"ef"
    assert await stream.receive_some() == b"gh"


def test_parse_url():
    assert parse_url("http://127.0.0.1:2379") == ("http", "127.0.0.1", 2379)
    assert parse_url("https://[::1]:2379") == ("https", "::1", 2379)
    assert parse_url("unix://localhost:2379") == ("unix", "localhost:2379", None)
    assert parse_url("unixs:///tmp/etcd.sock") == ("unixs", "/tmp/etcd.sock", None)
    for bad in ("http://127.0.0.1", "ftp://x:1", "http://x:notaport", "unix://"):
        with pytest.raises(ValueError):
            parse_url(bad)


# -- plain TCP ---------------------------------------------------------------------------------

async def test_http1_keep_alive_over_tcp(nursery):
    address = await start(nursery)
    out = await exchange(address, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                                   b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nxyz")
    first, second = out.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\nGET /a 0 ipv4")
    assert b"Connection: close\r\n" in second
    assert second.endswith(b"\r\n\r\nPOST /b 3 ipv4")


async def test_garbage_is_closed_without_answer(nursery):
    address = await start(nursery)
    assert await exchange(address, b"hello world\r\n\r\n") in (b"", b"<RST>")
    assert await exchange(address, b"GET / HTTP/3.7\r\n\r\n") in (b"", b"<RST>")


async def test_bad_request_gets_go_style_error(nursery):
    address = await start(nursery)
    out = await exchange(address, b"GET /health HTTP/1.1\r\n\r\n")
    assert out == (b"HTTP/1.1 400 Bad Request: missing required Host header\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
                   b"400 Bad Request: missing required Host header")


async def test_body_limit_gives_413(nursery):
    address = await start(nursery, limits=http1.Limits(body_bytes_max=4))
    out = await exchange(address, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert out.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")


async def test_expect_100_continue(nursery):
    address = await start(nursery)
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n"
                              b"Connection: close\r\n\r\n")
        assert await stream.receive_some() == b"HTTP/1.1 100 Continue\r\n\r\n"
        await stream.send_all(b"ok")
        assert (await read_all(stream)).endswith(b"POST /x 2 ipv4")


async def test_app_failure_gives_500_and_listener_survives(nursery):
    async def broken(request):
        raise RuntimeError("boom")

    address = await start(nursery, app=broken)
    for _ in range(2):
        out = await exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")


async def test_grpc_over_cleartext_h2(nursery):
    address = await start(nursery, registry=kv_registry())
    response = await trio.to_thread.run_sync(grpc_range, f"127.0.0.1:{address[1]}", b"abc")
    assert response.count == 3 and response.more  # the peer was ipv4:...
    # The same port still speaks HTTP/1.1.
    assert (await exchange(address, b"GET /z HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).endswith(b"GET /z 0 ipv4")


async def test_h2_preface_without_registry_is_closed(nursery):
    address = await start(nursery, registry=None)
    assert await exchange(address, H2_PREFACE) in (b"", b"<RST>")


# -- streamed responses --------------------------------------------------------------------------

async def test_streamed_body_is_chunked_and_stops_when_client_leaves(nursery):
    closed = trio.Event()
    sent_second = trio.Event()

    async def watch_app(request):
        async def body():
            try:
                yield b'{"result":1}\n'
                yield b'{"result":2}\n'
                sent_second.set()
                await trio.sleep_forever()
            finally:
                closed.set()

        return http1.Response(200, (("Content-Type", "application/json"),), body())

    address = await start(nursery, app=watch_app)
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\n\r\n")
    got = b""
    while b'{"result":2}\n\r\n' not in got:
        got += await stream.receive_some()
    assert got.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: ")
    assert b"\r\nTransfer-Encoding: chunked\r\n\r\nd\r\n{\"result\":1}\n\r\nd\r\n{\"result\":2}\n\r\n" in got
    await sent_second.wait()
    await stream.aclose()
    with trio.fail_after(5):
        await closed.wait()


async def test_streamed_body_end_allows_next_request():
    async def app(request):
        async def body():
            yield b"ab"
            yield b"c"
        return http1.Response(200, (), body() if request.target == "/s" else b"plain")

    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_then_close, server, app)
        await send_ignoring_close(
            client, b"GET /s HTTP/1.1\r\nHost: x\r\n\r\nGET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = await read_all(client)
    assert b"Transfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n" in out
    assert out.endswith(b"Content-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nplain")


# -- deadlines (virtual time) ------------------------------------------------------------------

async def test_silent_connection_is_closed_after_sniff_timeout(autojump_clock):
    from trietcd.wire import listener

    client, server = trio.testing.memory_stream_pair()
    start_time = trio.current_time()
    await listener._serve_connection(
        server, peer="", registry=None, http_app=echo_app, h2_limits=H2Limits(), ssl_context=None,
        connections=ConnectionSet(), sniff_timeout_s=7.0, http1_limits=http1.Limits())
    assert trio.current_time() - start_time == pytest.approx(7.0)


async def test_slowloris_request_is_dropped(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    start_time = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_then_close(server, echo_app, request_timeout_s=30.0, idle_timeout_s=100.0))
        await trio.sleep(20)  # idle, within idle_timeout_s
        sent = 0
        with pytest.raises(trio.BrokenResourceError):
            for byte in b"GET / HTTP/1.1\r\nHost: x\r\n\r\n":  # one byte every 5 s never completes in time
                await client.send_all(bytes([byte]))
                sent += 1
                await trio.sleep(5)
    # The first byte came at 20 s, the request deadline passed at 50 s: bytes at 20, 25, ... 45 got in.
    assert sent == 6
    assert trio.current_time() - start_time == pytest.approx(50.0)


async def test_idle_keep_alive_connection_is_closed(autojump_clock):
    client, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: serve_then_close(server, echo_app, idle_timeout_s=100.0))
        await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        start_time = trio.current_time()
        out = await read_all(client)
    assert out.endswith(b"GET / 0 ")
    assert trio.current_time() - start_time == pytest.approx(100.0)


# -- unix sockets ----------------------------------------------------------------------------------

async def test_unix_socket_removes_stale_file_and_cleans_up(tmp_path):
    path = tmp_path / "localhost:23799"
    path.write_text("stale")
    async with trio.open_nursery() as nursery:
        bound = await start(nursery, f"unix://{path}", registry=kv_registry())
        assert bound == str(path)
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await read_all(stream)).endswith(b"GET /u 0 unix")
        response = await trio.to_thread.run_sync(grpc_range, f"unix:{path}", b"ab")
        assert response.count == 2 and not response.more
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_unix_url_relative_path_like_etcd(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            bound = await start(nursery, "unix://localhost:23799")
            assert bound == "localhost:23799"
            assert (tmp_path / "localhost:23799").is_socket()
            nursery.cancel_scope.cancel()
    finally:
        os.chdir(cwd)


# -- TLS ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cert_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "server.crt", d / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def client_ssl(cert: str, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cert)
    ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.mark.parametrize("alpn", [["http/1.1"], []], ids=["alpn-http1", "no-alpn"])
async def test_https_http1(nursery, cert_files, alpn):
    address = await start(nursery, "https://127.0.0.1:0", ssl_context=server_context(*cert_files))
    tcp = await trio.open_tcp_stream(*address)
    stream = trio.SSLStream(tcp, client_ssl(cert_files[0], alpn), server_hostname="localhost")
    async with stream:
        await stream.send_all(b"GET /secure HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        try:
            while data := await stream.receive_some():
                out += data
        except trio.BrokenResourceError:
            pass
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"GET /secure 0 ipv4")


async def test_https_rejects_plaintext_like_etcd(nursery, cert_files):
    # etcd 3.5.1 closes without a word: its TLS listener fails the handshake before any HTTP server runs.
    address = await start(nursery, "https://127.0.0.1:0", ssl_context=server_context(*cert_files))
    assert await exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") in (b"", b"<RST>")
    assert await exchange(address, H2_PREFACE) in (b"", b"<RST>")


async def test_grpc_over_tls_with_alpn_h2(nursery, cert_files):
    address = await start(nursery, "https://127.0.0.1:0", registry=kv_registry(),
                          ssl_context=server_context(*cert_files))
    with open(cert_files[0], "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    response = await trio.to_thread.run_sync(
        grpc_range, f"127.0.0.1:{address[1]}", b"abcd", credentials, (("grpc.ssl_target_name_override", "localhost"),))
    assert response.count == 4


async def test_http_url_ignores_tls_context(nursery, cert_files):
    address = await start(nursery, ssl_context=server_context(*cert_files))
    assert (await exchange(address, b"GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).endswith(b"GET /p 0 ipv4")


async def test_https_without_context_is_refused():
    with pytest.raises(ValueError):
        await serve_url("https://127.0.0.1:0", registry=None, http_app=echo_app, h2_limits=H2Limits(),
                        ssl_context=None, connections=ConnectionSet())


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory):
    """A CA with a server certificate (localhost) and a client certificate signed by it."""
    d = tmp_path_factory.mktemp("ca")

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=test-ca")
    for name, ext in [("server", "subjectAltName=DNS:localhost,IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")]:
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(ext + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext")
    return {name: str(d / name) for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")}


async def https_get(address, ctx) -> bytes:
    stream = trio.SSLStream(await trio.open_tcp_stream(*address), ctx, server_hostname="localhost")
    async with stream:
        await stream.send_all(b"GET /cert HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_all(stream)


async def test_client_certificate_auth(nursery, ca_files):
    server = server_context(ca_files["server.crt"], ca_files["server.key"], trusted_ca_file=ca_files["ca.crt"],
                            client_cert_auth=True)
    address = await start(nursery, "https://127.0.0.1:0", ssl_context=server)
    with_cert = client_ssl(ca_files["ca.crt"], ["http/1.1"])
    with_cert.load_cert_chain(ca_files["client.crt"], ca_files["client.key"])
    assert (await https_get(address, with_cert)).endswith(b"GET /cert 0 ipv4")
    # Without a client certificate the handshake fails and no request is served.
    without = client_ssl(ca_files["ca.crt"], ["http/1.1"])
    try:
        out = await https_get(address, without)
    except trio.BrokenResourceError:  # TLS 1.2 refuses in the handshake, TLS 1.3 right after it
        out = b""
    assert b"GET /cert" not in out


async def test_peer_that_stops_reading_is_dropped(autojump_clock):
    from trietcd.wire.listener import SEND_STALL_TIMEOUT_S

    async def endless(request):
        async def body():
            while True:
                yield b"x" * 1000

        return http1.Response(200, (), body())

    client, server = trio.testing.lockstep_stream_pair()
    start_time = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.send_all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await serve_http1(server, endless)  # returns: the connection is given up
    assert trio.current_time() - start_time == pytest.approx(SEND_STALL_TIMEOUT_S)


async def test_connection_failure_is_logged_and_listener_survives(nursery, caplog):
    async def exploding_body(request):
        async def body():
            yield b"first"
            raise RuntimeError("body exploded")

        return http1.Response(200, (), body())

    address = await start(nursery, app=exploding_body)
    for _ in range(2):
        out = await exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"5\r\nfirst\r\n" in out and not out.endswith(b"0\r\n\r\n")  # cut short, never completed
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
