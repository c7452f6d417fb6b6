"""The JSON gateway against bytes recorded from etcd 3.5.1 (curl on its client port)."""

import pytest
import trio

from proto.etcdserverpb import rpc_pb2
from proto.mvccpb import kv_pb2
from trietcd.api.gateway import (
    GatewayCall,
    JsonDecodeError,
    decode_json_values,
    gateway_app,
    go_base64_decode,
    json_to_message,
    message_to_json,
)
from trietcd.gojson import go_string
from trietcd.wire.grpc_call import GrpcError, Registry, Status
from trietcd.wire.http1 import Request, StreamingBody

HEADER = dict(cluster_id=7801232528081817440, member_id=13458989633860879742, raft_term=2)
HEADER_JSON = '"cluster_id":"7801232528081817440","member_id":"13458989633860879742"'
JSON = (("Content-Type", "application/json"),)
OK = (("Content-Type", "application/json"), ("Grpc-Metadata-Content-Type", "application/grpc"))


def header(revision=3):
    return rpc_pb2.ResponseHeader(revision=revision, **HEADER)


class FakeEtcd:
    """Just enough of etcd's KV/Watch/Lease/Auth/Cluster behaviour to drive the gateway."""

    def __init__(self):
        self.calls = []

    async def Range(self, request, call):
        self.calls.append((request, call))
        if not request.key:
            raise GrpcError(Status.INVALID_ARGUMENT, "etcdserver: key is not provided")
        kv = kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=3, version=2, value=b"baz")
        if request.key == b"missing":
            return rpc_pb2.RangeResponse(header=header())
        if request.count_only:
            return rpc_pb2.RangeResponse(header=header(), count=1)
        return rpc_pb2.RangeResponse(header=header(), kvs=[kv], count=1)

    async def Put(self, request, call):
        self.calls.append((request, call))
        response = rpc_pb2.PutResponse(header=header(2))
        if request.prev_kv:
            response.prev_kv.CopyFrom(kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=2, version=1,
                                                      value=b"bar"))
        return response

    async def Txn(self, request, call):
        self.calls.append((request, call))
        kv = kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=3, version=2, value=b"baz")
        op = rpc_pb2.ResponseOp(response_range=rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(revision=3),
                                                                      kvs=[kv], count=1))
        return rpc_pb2.TxnResponse(header=header(), responses=[op])

    async def Compact(self, request, call):
        raise GrpcError(Status.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")

    async def Watch(self, call):
        async for request in call.requests():
            if request.HasField("create_request"):
                await call.send(rpc_pb2.WatchResponse(header=header(2), created=True))
                event = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"foo", mod_revision=4))
                await call.send(rpc_pb2.WatchResponse(header=header(4), events=[event]))

    async def LeaseKeepAlive(self, call):
        async for request in call.requests():
            if request.ID == 13:
                raise GrpcError(Status.UNAVAILABLE, "etcdserver: no leader")
            await call.send(rpc_pb2.LeaseKeepAliveResponse(header=header(4), ID=request.ID, TTL=60))

    async def LeaseGrant(self, request, call):
        return rpc_pb2.LeaseGrantResponse(header=header(3), ID=5007618008855436305, TTL=request.TTL or 2)

    async def UserList(self, request, call):
        return rpc_pb2.AuthUserListResponse(header=header(1), users=["<a&b>\u2028é\x01"])

    async def AuthStatus(self, request, call):
        return rpc_pb2.AuthStatusResponse(header=header(3), authRevision=1)

    async def MemberList(self, request, call):
        member = rpc_pb2.Member(ID=13458989633860879742, name="o1", peerURLs=["http://127.0.0.1:23792"],
                                clientURLs=["http://127.0.0.1:23791"])
        return rpc_pb2.MemberListResponse(header=rpc_pb2.ResponseHeader(**HEADER), members=[member])


@pytest.fixture
def etcd():
    return FakeEtcd()


@pytest.fixture
def app(etcd):
    registry = Registry()
    services = rpc_pb2.DESCRIPTOR.services_by_name
    registry.add_service(services["KV"], {"Range": etcd.Range, "Put": etcd.Put, "Txn": etcd.Txn,
                                          "Compact": etcd.Compact})
    registry.add_service(services["Watch"], {"Watch": etcd.Watch})
    registry.add_service(services["Lease"], {"LeaseKeepAlive": etcd.LeaseKeepAlive, "LeaseGrant": etcd.LeaseGrant})
    registry.add_service(services["Auth"], {"UserList": etcd.UserList, "AuthStatus": etcd.AuthStatus})
    registry.add_service(services["Cluster"], {"MemberList": etcd.MemberList})
    return gateway_app(registry)


def post(path, body, headers=(("Host", "127.0.0.1:23791"),), method="POST"):
    return Request(method, path, tuple(headers), body.encode() if isinstance(body, str) else body,
                   "ipv4:127.0.0.1:40000")


class Writer:
    def __init__(self, status, headers):
        self.status, self.headers, self.chunks = status, headers, []

    def set_head(self, status, headers):
        assert not self.chunks
        self.status, self.headers = status, headers

    async def write(self, data):
        self.chunks.append(data)


async def run_stream(response):
    assert isinstance(response.body, StreamingBody)
    writer = Writer(response.status, response.headers)
    await response.body.run(writer)
    return writer


async def test_put_exact_bytes(app):
    response = await app(post("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}'))
    assert (response.status, response.headers) == (200, OK)
    assert response.body == b'{"header":{' + HEADER_JSON.encode() + b',"revision":"2","raft_term":"2"}}'


async def test_put_prev_kv(app, etcd):
    response = await app(post("/v3/kv/put", '{"key":"Zm9v","value":"YmF6","prev_kv":true}'))
    assert response.body.decode() == (
        '{"header":{' + HEADER_JSON + ',"revision":"2","raft_term":"2"},'
        '"prev_kv":{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}}')
    request, call = etcd.calls[-1]
    assert (request.key, request.value, request.prev_kv) == (b"foo", b"baz", True)


@pytest.mark.parametrize("body", ['{"key":"Zm9v"}', '{"key":"Zm9v","bogus":1}', '{"key":"Zm9v"} trailing',
                                  '{"key":"Zm9v","limit":"1"}', '{"key":"Zm9v","sort_order":"DESCEND"}',
                                  '{"key":"Zm9v","limit":null}'])
async def test_range_exact_bytes(app, body):
    response = await app(post("/v3/kv/range", body))
    assert response.body.decode() == (
        '{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"},'
        '"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}],"count":"1"}')


async def test_range_field_names_both_spellings(app, etcd):
    await app(post("/v3/kv/range", '{"key":"AA==","range_end":"AA==","count_only":true}'))
    assert etcd.calls[-1][0].range_end == b"\0"
    await app(post("/v3/kv/range", '{"key":"AA==","rangeEnd":"AA==","countOnly":true,"Key":"x"}'))
    request = etcd.calls[-1][0]
    assert (request.key, request.range_end, request.count_only) == (b"\0", b"\0", True)


async def test_range_empty_results(app):
    response = await app(post("/v3/kv/range", '{"key":"bWlzc2luZw=="}'))
    assert response.body.decode() == '{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"}}'
    response = await app(post("/v3/kv/range", '{"key":"Zm9v","count_only":true}'))
    assert response.body.decode() == '{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"},"count":"1"}'


@pytest.mark.parametrize("body", ["", "{}", '{"key":null}', "   "])
async def test_missing_key_error_exact_bytes(app, body):
    response = await app(post("/v3/kv/range", body))
    assert (response.status, response.headers) == (400, JSON)
    assert response.body == (b'{"error":"etcdserver: key is not provided","code":3,'
                             b'"message":"etcdserver: key is not provided"}')


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"key":', "unexpected EOF"),
        ('{"key":"!!"}', "illegal base64 data at input byte 0"),
        ('{"key":"Zm9v!"}', "illegal base64 data at input byte 4"),
        ('{"key":"Zm9"}', "illegal base64 data at input byte 0"),
        ('{"key":"Zm9_"}', "illegal base64 data at input byte 3"),
        ('{"key":"Zm9v","limit":"x"}', "invalid character 'x' looking for beginning of value"),
        ('{"key":5}', "json: cannot unmarshal number into Go value of type []uint8"),
        ('{"key":"Zm9v","sort_order":"NOPE"}',
         'unknown value "\\"NOPE\\"" for enum etcdserverpb.RangeRequest.SortOrder'),
        ('{"key":"Zm9v","limit":1.5}', "json: cannot unmarshal number 1.5 into Go value of type int64"),
        ('{"key":"Zm9v","limit":true}', "json: cannot unmarshal bool into Go value of type int64"),
        ('{"key":"Zm9v","serializable":"true"}', "json: cannot unmarshal string into Go value of type bool"),
        ("[1,2]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage"),
        ('"str"', "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"),
        ("nope", "invalid character 'o' in literal null (expecting 'u')"),
        ('{"key":"Zm9v",}', "invalid character '}' looking for beginning of object key string"),
        ('{"key":"Zm9v","limit":"9223372036854775808"}',
         "json: cannot unmarshal number 9223372036854775808 into Go value of type int64"),
        ('{"key":"Zm9v","limit":1e2}', "json: cannot unmarshal number 1e2 into Go value of type int64"),
        ('{"key":"Zm9v","min_mod_revision":"1e2"}', "json: cannot unmarshal number 1e2 into Go value of type int64"),
    ],
)
async def test_decode_errors_like_etcd(app, body, message):
    response = await app(post("/v3/kv/range", body))
    assert response.status == 400
    assert response.body == ('{"error":' + go_string(message) + ',"code":3,"message":'
                             + go_string(message) + "}").encode()


async def test_accepted_oddities(app, etcd):
    for body in ['{"key":"Zm9v","sort_order":7}', '{"key":"Zm9v","limit":-1}', '{"key":"Zm9v\\n"}']:
        response = await app(post("/v3/kv/range", body))
        assert response.status == 200, body
    assert etcd.calls[-1][0].key == b"foo"


async def test_error_status_mapping(app):
    response = await app(post("/v3/kv/compaction", '{"revision":"1000"}'))
    assert response.status == 400
    assert response.body == (b'{"error":"etcdserver: mvcc: required revision is a future revision","code":11,'
                             b'"message":"etcdserver: mvcc: required revision is a future revision"}')
    # A registered service without a handler for the method: grpc-go's UNIMPLEMENTED -> 501.
    response = await app(post("/v3/kv/deleterange", '{"key":"Zm9v"}'))
    assert response.status == 501
    assert b'"code":12' in response.body
    # An unregistered service.
    response = await app(post("/v3/maintenance/status", "{}"))
    assert response.status == 501
    assert response.body == (b'{"error":"unknown service etcdserverpb.Maintenance","code":12,'
                             b'"message":"unknown service etcdserverpb.Maintenance"}')


async def test_routes_and_methods(app):
    not_found = await app(post("/v3/kv/foo", "{}"))
    assert (not_found.status, not_found.body) == (404, b"Not Found\n")
    assert not_found.headers == (("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"))
    for method in ("GET", "PUT", "DELETE"):
        wrong = await app(post("/v3/kv/range", "", method=method))
        assert (wrong.status, wrong.body) == (405, b"Method Not Allowed\n")
    beta = await app(post("/v3beta/kv/range", '{"key":"Zm9v"}'))
    assert beta.status == 200


async def test_txn_nested_field_names(app, etcd):
    body = ('{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"0"}],'
            '"success":[{"requestPut":{"key":"Zm9v","value":"YmFy"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}')
    response = await app(post("/v3/kv/txn", body))
    assert response.body.decode() == (
        '{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"},"responses":[{"response_range":'
        '{"header":{"revision":"3"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2",'
        '"value":"YmF6"}],"count":"1"}}]}')
    request = etcd.calls[-1][0]
    assert request.compare[0].target == rpc_pb2.Compare.CREATE
    assert request.compare[0].HasField("create_revision")
    assert request.success[0].request_put.value == b"bar"
    assert request.failure[0].request_range.key == b"foo"


async def test_capitalised_proto_names(app):
    grant = await app(post("/v3/lease/grant", '{"TTL":60}'))
    assert grant.body.decode() == ('{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"},'
                                   '"ID":"5007618008855436305","TTL":"60"}')
    ignored = await app(post("/v3/lease/grant", '{"ttl":60}'))
    assert ignored.body.decode().endswith('"TTL":"2"}')
    members = await app(post("/v3/cluster/member/list", "{}"))
    assert members.body.decode() == (
        '{"header":{' + HEADER_JSON + ',"raft_term":"2"},"members":[{"ID":"13458989633860879742","name":"o1",'
        '"peerURLs":["http://127.0.0.1:23792"],"clientURLs":["http://127.0.0.1:23791"]}]}')
    status = await app(post("/v3/auth/status", "{}"))
    assert status.body.decode() == '{"header":{' + HEADER_JSON + ',"revision":"3","raft_term":"2"},"authRevision":"1"}'


async def test_go_string_escaping(app):
    response = await app(post("/v3/auth/user/list", "{}"))
    assert response.body.decode("utf-8") == (
        '{"header":{' + HEADER_JSON + ',"revision":"1","raft_term":"2"},'
        '"users":["\\u003ca\\u0026b\\u003e\\u2028é\\u0001"]}')


async def test_metadata_forwarding(app, etcd):
    headers = (("Host", "127.0.0.1:23791"), ("Authorization", "tok123"), ("Grpc-Metadata-Token", "t2"),
               ("User-Agent", "curl/8"), ("X-Other", "x"))
    await app(post("/v3/kv/range", '{"key":"Zm9v"}', headers=headers))
    call = etcd.calls[-1][1]
    assert isinstance(call, GatewayCall)
    assert call.metadata == {
        "authorization": "tok123", "grpcgateway-authorization": "tok123", "token": "t2",
        "grpcgateway-user-agent": "curl/8", "grpcgateway-host": "127.0.0.1:23791",
        "x-forwarded-host": "127.0.0.1:23791", "x-forwarded-for": "127.0.0.1",
    }
    assert call.peer == "ipv4:127.0.0.1:40000"


async def test_grpc_timeout_header_sets_deadline(app, etcd, autojump_clock):
    await app(post("/v3/kv/range", '{"key":"Zm9v"}', headers=(("Host", "x"), ("Grpc-Timeout", "5S"))))
    assert etcd.calls[-1][1].deadline == pytest.approx(trio.current_time() + 5)


async def test_watch_stream_lines(app):
    response = await app(post("/v3/watch", '{"create_request":{"key":"Zm9v","prev_kv":true}}'))
    assert (response.status, response.headers) == (200, OK)
    writer = await run_stream(response)
    assert writer.chunks == [
        b'{"result":{"header":{' + HEADER_JSON.encode() + b',"revision":"2","raft_term":"2"},"created":true}}\n',
        b'{"result":{"header":{' + HEADER_JSON.encode() + b',"revision":"4","raft_term":"2"},'
        b'"events":[{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}]}}\n',
    ]


async def test_watch_several_requests_in_one_body(app):
    body = '{"create_request":{"key":"Zm9v"}}{"create_request":{"key":"YmFy"}}'
    writer = await run_stream(await app(post("/v3/watch", body)))
    assert len(writer.chunks) == 4


async def test_stream_bad_json_is_unknown_500(app):
    response = await app(post("/v3/watch", '{"create_request":'))
    assert (response.status, response.headers) == (500, JSON)
    assert response.body == b'{"error":"unexpected EOF","code":2,"message":"unexpected EOF"}'


async def test_stream_error_before_and_after_first_message(app):
    writer = await run_stream(await app(post("/v3/lease/keepalive", '{"ID":"13"}')))
    assert writer.status == 503
    assert writer.chunks == [b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader",'
                             b'"http_status":"Service Unavailable"}}']
    writer = await run_stream(await app(post("/v3/lease/keepalive", '{"ID":"7"}{"ID":"13"}')))
    assert writer.status == 200
    assert writer.chunks[0] == (b'{"result":{"header":{' + HEADER_JSON.encode() +
                                b',"revision":"4","raft_term":"2"},"ID":"7","TTL":"60"}}\n')
    assert writer.chunks[1].startswith(b'{"error":{"grpc_code":14,')


def test_go_base64_decode():
    assert go_base64_decode("Zm9v") == b"foo"
    assert go_base64_decode("Zm8=") == b"fo"
    assert go_base64_decode("Zg==") == b"f"
    assert go_base64_decode("Zm9v\r\nYmFy") == b"foobar"
    assert go_base64_decode("") == b""
    for bad, index in [("Zg=", 3), ("Zg=a", 2), ("Z===", 1), ("Zm9v=", 4), ("Zg==x", 4), ("Zm8=Zm8=", 4)]:
        with pytest.raises(JsonDecodeError, match=f"at input byte {index}$"):
            go_base64_decode(bad)


def test_message_json_round_trip():
    original = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(result=rpc_pb2.Compare.GREATER, target=rpc_pb2.Compare.MOD, key=b"k",
                                 mod_revision=-5)],
        success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"\xff\x00", prev_kv=True))],
    )
    text = message_to_json(original)
    assert text == ('{"compare":[{"result":"GREATER","target":"MOD","key":"aw==","mod_revision":"-5"}],'
                    '"success":[{"request_delete_range":{"key":"/wA=","prev_kv":true}}]}')
    parsed = rpc_pb2.TxnRequest()
    json_to_message(decode_json_values(text.encode(), first_only=True)[0], parsed)
    assert parsed == original


def test_oneof_zero_value_is_written():
    # A set oneof member is written even when it holds the zero value.
    compare = rpc_pb2.Compare(key=b"k", version=0)
    assert message_to_json(compare) == '{"key":"aw==","version":"0"}'


async def test_request_size_limit_like_grpc(etcd):
    registry = Registry()
    registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["KV"], {"Put": etcd.Put})
    app = gateway_app(registry, max_recv_message_bytes=2097152)
    import base64

    body = '{"key":"Zm9v","value":"' + base64.b64encode(b"x" * 2_200_000).decode() + '"}'
    response = await app(post("/v3/kv/put", body))
    assert (response.status, response.headers) == (429, JSON)
    assert response.body == (b'{"error":"grpc: received message larger than max (2200010 vs. 2097152)","code":8,'
                             b'"message":"grpc: received message larger than max (2200010 vs. 2097152)"}')
    ok = await app(post("/v3/kv/put", '{"key":"Zm9v","value":"' + base64.b64encode(b"x" * 2_000_000).decode() + '"}'))
    assert ok.status == 200


async def test_watch_through_listener_ends_when_client_leaves(nursery):
    from trietcd.wire.conn import ConnectionSet
    from trietcd.wire.h2_conn import H2Limits
    from trietcd.wire.listener import serve_url

    cancelled = trio.Event()

    async def watch(call):
        try:
            async for request in call.requests():
                await call.send(rpc_pb2.WatchResponse(header=header(2), created=True))
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.set()
            raise

    registry = Registry()
    registry.add_service(rpc_pb2.DESCRIPTOR.services_by_name["Watch"], {"Watch": watch})
    address = await nursery.start(lambda task_status: serve_url(
        "http://127.0.0.1:0", registry=registry, http_app=gateway_app(registry), h2_limits=H2Limits(),
        ssl_context=None, connections=ConnectionSet(), task_status=task_status))
    stream = await trio.open_tcp_stream(*address)
    body = b'{"create_request":{"key":"Zm9v"}}'
    await stream.send_all(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b"}}\n\r\n" not in got:
        got += await stream.receive_some()
    assert got.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Grpc-Metadata-Content-Type: application/grpc\r\nDate: ")
    line = b'{"result":{"header":{' + HEADER_JSON.encode() + b',"revision":"2","raft_term":"2"},"created":true}}\n'
    assert got.endswith(b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(line), line))
    await stream.aclose()
    with trio.fail_after(5):
        await cancelled.wait()
