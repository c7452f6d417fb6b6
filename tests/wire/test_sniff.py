import pytest

from trietcd.wire.sniff import H2_PREFACE, SNIFF_MAX_BYTES, Kind, classify

CLIENT_HELLO_START = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])


def classify_growing(data: bytes) -> list[Kind]:
    """Kinds for every prefix of `data`, as a reader feeding one byte at a time would see."""
    return [classify(data[:n]) for n in range(1, len(data) + 1)]


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"", Kind.NEED_MORE),
        (CLIENT_HELLO_START, Kind.TLS),
        (bytes([0x16, 0x03, 0x03]), Kind.TLS),
        (bytes([0x16, 0x03, 0x09]), Kind.GARBAGE),
        (bytes([0x16, 0x02]), Kind.GARBAGE),
        (H2_PREFACE, Kind.H2),
        (H2_PREFACE + b"\x00\x00\x00\x04", Kind.H2),
        (H2_PREFACE[:10], Kind.NEED_MORE),
        (b"GET /health HTTP/1.1\r\n", Kind.HTTP1),
        (b"GET /health HTTP/1.0\n", Kind.HTTP1),
        (b"get /health HTTP/1.1\r\nHost: x\r\n\r\n", Kind.HTTP1),
        (b"POST /v3/kv/range HTTP/1.1\r\n", Kind.HTTP1),
        (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", Kind.GARBAGE),
        (b"GET /health HTTP/3.7\r\n", Kind.GARBAGE),
        (b"GET /health\r\n", Kind.GARBAGE),
        (b"GET  /health HTTP/1.1\r\n", Kind.GARBAGE),
        (b"hello world\r\n\r\n", Kind.GARBAGE),
        (b"\x00\x01\x02", Kind.GARBAGE),
        (b"GE", Kind.NEED_MORE),
        (b"GET /a\x01", Kind.GARBAGE),
    ],
)
def test_classify(data, kind):
    assert classify(data) == kind


@pytest.mark.parametrize(
    "data, kind",
    [
        (H2_PREFACE, Kind.H2),
        (b"GET /health HTTP/1.1\r\n", Kind.HTTP1),
        (b"PUT /x HTTP/1.1\n", Kind.HTTP1),
        (CLIENT_HELLO_START, Kind.TLS),
    ],
)
def test_prefixes_wait_then_decide(data, kind):
    kinds = classify_growing(data)
    decided = [k for k in kinds if k != Kind.NEED_MORE]
    # Every prefix either waits or already gives the final answer, never a wrong one.
    assert set(decided) == {kind}
    assert kinds[-1] == kind


def test_garbage_is_detected_on_first_byte():
    assert classify(b"\x00") == Kind.GARBAGE
    assert classify(b"{") == Kind.GARBAGE


def test_unterminated_line_becomes_garbage_at_the_limit():
    line = b"GET /" + b"a" * SNIFF_MAX_BYTES
    assert classify(line[: SNIFF_MAX_BYTES - 1]) == Kind.NEED_MORE
    assert classify(line) == Kind.GARBAGE


from hypothesis import given, strategies as st  # noqa: E402


@given(st.binary(max_size=64))
def test_classify_is_total_and_stable(data):
    kind = classify(data)
    assert isinstance(kind, Kind)
    # Once decided, more bytes never change the answer.
    if kind != Kind.NEED_MORE:
        assert classify(data + b"\r\nmore") == kind
