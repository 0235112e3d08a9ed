"""The client's own HTTP/1.1 (``trio_isyswasfa.http._h1``): strict, and never more lenient
than h11, which it replaced; checked case by case and against h11 on generated valid and
malformed responses."""

from __future__ import annotations

from typing import Any

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trio_isyswasfa.http import _h1

# -- driving both parsers over the same bytes ---------------------------------------------


def ours(method: bytes, pieces: list[bytes], eof: bool = True) -> tuple[Any, ...]:
    """What our parser makes of a response arriving in ``pieces`` (then the end of the
    connection, if ``eof``): ``("ok", status, headers, body, trailers, reusable)``,
    ``("closed",)``, ``("error",)`` or (waiting for more) ``("need",)``."""
    conn = _h1.ClientConnection()
    conn.send_request(_h1.request_head(method, b"/", [(b"host", b"example")]))
    conn.send_end()
    feed = iter([*pieces, b""] if eof else pieces)
    head: _h1.Head | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is _h1.NEED_DATA:
                if (data := next(feed, None)) is None:
                    return ("need",)
                conn.receive_data(data)
            elif event is _h1.CLOSED:
                return ("closed",)
            elif isinstance(event, _h1.Head):
                head = event
            elif isinstance(event, bytes):
                body += event
            else:
                assert isinstance(event, _h1.End)
                assert head is not None
                return ("ok", head.status, head.headers, body, event.trailers, conn.reusable())
    except _h1.RemoteProtocolError:
        return ("error",)


def theirs(method: bytes, pieces: list[bytes]) -> tuple[Any, ...]:
    """The same through h11 (informational responses left out, as we skip them)."""
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "example")]))
    conn.send(h11.EndOfMessage())
    feed = iter([*pieces, b""])
    head: h11.Response | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(next(feed))
            elif isinstance(event, h11.ConnectionClosed):
                return ("closed",)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE
                return (
                    "ok",
                    head.status_code,
                    list(head.headers),
                    body,
                    list(event.headers),
                    reusable,
                )
            elif event is h11.PAUSED:  # a protocol switch: we never take one
                return ("error",)
    except h11.RemoteProtocolError:
        return ("error",)


def never_more_lenient(method: bytes, pieces: list[bytes]) -> tuple[Any, ...]:
    """Both verdicts: where ours accepts, h11 accepts with the same result (a connection
    we keep, h11 keeps too); where h11 rejects, so do we."""
    mine, h11s = ours(method, pieces), theirs(method, pieces)
    if mine[0] == "ok":
        assert h11s[0] == "ok", (mine, h11s)
        # (h11 lower-cases transfer-encoding's value; we pass fields on as they came)
        assert mine[:2] == h11s[:2]
        assert [(n, v.lower() if n == b"transfer-encoding" else v) for n, v in mine[2]] == h11s[2]
        assert mine[3:5] == h11s[3:5]
        assert h11s[5] or not mine[5]
    else:
        assert mine == h11s or h11s[0] == "ok", (mine, h11s)
    return mine


# -- generated responses ---------------------------------------------------------------

TOKEN = st.text("abcdefghijklmnopqrstuvwxyzXYZ0123456789-!#$%&'*+.^_`|~", min_size=1, max_size=12)
VALUE = st.builds(
    lambda a, b: (a + b).strip(" \t"),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=12),
    st.text(" \tabc", max_size=3),
)
FIELD = st.tuples(TOKEN, VALUE).filter(
    lambda f: f[0].lower() not in ("content-length", "transfer-encoding", "connection")
)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """A valid response (method, pieces): every framing, informational heads, trailers."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD"]))
    out = b""
    for _ in range(draw(st.integers(0, 2))):
        out += b"HTTP/1.1 %d Continue\r\nx-i: 1\r\n\r\n" % draw(st.sampled_from([100, 102, 103]))
    version = draw(st.sampled_from([b"1.1", b"1.1", b"1.0"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500, 599]))
    reason = draw(st.sampled_from([b" OK", b" ", b"", b" Not  Found\t!"]))
    fields = [(n.encode(), v.encode()) for n, v in draw(st.lists(FIELD, max_size=4))]
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    if draw(st.booleans()):
        fields.append(
            (b"Connection", draw(st.sampled_from([b"close", b"keep-alive", b"x, Close"])))
        )
    trailers = b""
    if framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
        payload = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        ext = draw(st.sampled_from([b"", b";a=b", b";x"]))
        payload = b"".join(b"%x%s\r\n%s\r\n" % (len(p), ext, p) for p in parts if p)
        trailer_fields = draw(st.lists(FIELD, max_size=2))
        trailers = b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in trailer_fields)
        payload += b"0\r\n" + trailers + b"\r\n"
    else:
        payload = body
    head = b"HTTP/%s %d%s\r\n" % (version, status, reason)
    head += b"".join(b"%s: %s\r\n" % f for f in fields) + b"\r\n"
    wire = out + head + payload
    cuts = sorted(draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    return method, [p for p in pieces if p]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(responses())
def test_valid_responses_parse_as_h11_parses_them(case: tuple[bytes, list[bytes]]) -> None:
    method, pieces = case
    assert never_more_lenient(method, pieces)[0] == "ok"


NASTY = [
    b"\n",
    b"\r",
    b"\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"f",
    b"\x7f",
    b"\xff",
]


@settings(max_examples=250, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(responses(), st.data())
@example((b"GET", [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]), None)  # (checked as is)
@example((b"GET", [b"HTTP/1.1 000 OK\r\ncontent-length: 0\r\n\r\n"]), None)  # (no status)
@example(  # an empty list element in transfer-encoding, which h11 refuses (found by CI)
    (b"GET", [b"HTTP/1.1 200 \r\ntransfer-encoding: chunked,\r\n\r\n0\r\n\r\n"]), None
)
def test_malformed_responses_are_never_taken_where_h11_refuses_them(
    case: tuple[bytes, list[bytes]], data: st.DataObject | None
) -> None:
    method, pieces = case
    wire = b"".join(pieces)
    if data is not None:
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(wire)))
            cut = data.draw(st.integers(0, 2))
            wire = wire[:at] + data.draw(st.sampled_from(NASTY)) + wire[at + cut :]
    never_more_lenient(method, [wire])


# -- refusals, one by one (each check of the parser, so that deleting it goes red) ------------

REFUSED = {
    "no status line": b"HTTP/1.1 OK\r\n\r\n",
    "a status below 100": b"HTTP/1.1 000 OK\r\ncontent-length: 0\r\n\r\n",
    "HTTP/2 on the status line": b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
    "a bare LF ends the head": b"HTTP/1.1 200 OK\ncontent-length: 0\n\n",
    "a bare LF inside a field line": b"HTTP/1.1 200 OK\r\nx: a\nb\r\ncontent-length: 0\r\n\r\n",
    "obsolete line folding": b"HTTP/1.1 200 OK\r\nx: a\r\n b\r\ncontent-length: 0\r\n\r\n",
    "space before the colon": b"HTTP/1.1 200 OK\r\nx : a\r\ncontent-length: 0\r\n\r\n",
    "a control character in a value": b"HTTP/1.1 200 OK\r\nx: a\x01b\r\ncontent-length: 0\r\n\r\n",
    "a transfer coding other than chunked": b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
    "chunked not last": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
    "an empty transfer coding": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked,\r\n\r\n0\r\n\r\n",
    "two transfer-encoding fields": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "both framings": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n"
    ),
    "conflicting lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    "a length that is no number": b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\na",
    "a length of 19 digits": b"HTTP/1.1 200 OK\r\ncontent-length: 1000000000000000000\r\n\r\n",
    "a bad chunk size": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nz\r\n\r\n",
    "a chunk size line ending in a bare LF": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\nx"
    ),
    "a chunk longer than its size": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nxyz"
    ),
    "a malformed trailer": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx y: 1\r\n\r\n"
    ),
    "a trailer line ending in a bare LF": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: 1\n"
    ),
    "101 unasked": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
    "a head over 16 KiB": b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20_000,
    "a head over 16 KiB, whole": b"HTTP/1.1 200 OK\r\nx: " + b"a" * 20_000 + b"\r\n\r\n",
    "a chunk size line over 16 KiB": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;" + b"a" * 20_000
    ),
    "trailers over 16 KiB": (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: " + b"a" * 20_000
    ),
    "the end inside a head": b"HTTP/1.1 200 OK\r\ncontent-len",
    "the end inside a body": b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc",
    "the end inside chunks": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
}


@pytest.mark.parametrize(("case", "wire"), REFUSED.items(), ids=REFUSED.keys())
def test_malformed_responses_are_refused(case: str, wire: bytes) -> None:
    # at once, not when the connection ends (or times out), but for an early end
    eof = case.startswith("the end")
    assert ours(b"GET", [wire], eof=eof) == ("error",)
    if eof:
        assert ours(b"GET", [wire], eof=False) == ("need",)


def test_a_tunnel_is_refused() -> None:
    assert ours(b"CONNECT", [b"HTTP/1.1 200 OK\r\n\r\n"]) == ("error",)
    # a refused CONNECT is an ordinary response
    assert ours(b"CONNECT", [b"HTTP/1.1 403 No\r\ncontent-length: 0\r\n\r\n"])[0] == "ok"


def test_what_ends_a_response_and_whether_its_connection_is_kept() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
    assert ours(b"GET", [ok]) == ("ok", 200, [(b"content-length", b"2")], b"hi", [], True)
    assert ours(b"HEAD", [ok[:-2]])[3:] == (b"", [], True)
    assert ours(b"GET", [b"HTTP/1.1 204 No\r\ncontent-length: 2\r\n\r\n"])[3:] == (b"", [], True)
    closes = ours(b"GET", [b"HTTP/1.1 200 OK\r\n\r\nall of it"])
    assert closes[3:] == (b"all of it", [], False)
    assert ours(b"GET", [b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"])[5] is False
    assert (
        ours(b"GET", [b"HTTP/1.1 200 OK\r\nconnection: x, Close\r\ncontent-length: 0\r\n\r\n"])[5]
        is False
    )
    # bytes beyond the response answer no request of ours: the connection is not kept
    assert ours(b"GET", [ok + b"HTTP/1.1 200 OK\r\n"])[5] is False
    assert ours(b"GET", []) == ("closed",)


def test_informational_heads_are_skipped_and_chunks_come_with_trailers() -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 1\r\n\r\n"
    )
    for size in (1, 7, len(wire)):
        pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
        got = ours(b"GET", pieces)
        assert got[1:] == (
            200,
            [(b"transfer-encoding", b"chunked")],
            b"abcde",
            [(b"x-sum", b"1")],
            True,
        )


# -- requests ----------------------------------------------------------------------------


def test_a_request_head_is_what_h11_sends() -> None:
    headers = [(b"Host", b"example:80"), (b"X-Many", b"a  b"), (b"content-length", b"3")]
    ours_ = _h1.request_head(b"POST", b"/p?q=1", headers).data
    theirs_ = h11.Connection(h11.CLIENT).send(
        h11.Request(method=b"POST", target=b"/p?q=1", headers=headers)
    )
    assert ours_ == theirs_


UNSENDABLE = {
    "a method that is no token": (b"GE T", b"/", [(b"host", b"h")]),
    "a target with a space": (b"GET", b"/a b", [(b"host", b"h")]),
    "a target with a control character": (b"GET", b"/a\x00", [(b"host", b"h")]),
    "no host": (b"GET", b"/", []),
    "two hosts": (b"GET", b"/", [(b"host", b"h"), (b"Host", b"h")]),
    "a field name that is no token": (b"GET", b"/", [(b"host", b"h"), (b"a b", b"1")]),
    "a value with a line break": (b"GET", b"/", [(b"host", b"h"), (b"x", b"1\r\ny: 2")]),
    "a value with leading space": (b"GET", b"/", [(b"host", b"h"), (b"x", b" 1")]),
    "a bad length": (b"GET", b"/", [(b"host", b"h"), (b"content-length", b"-1")]),
    "two lengths": (
        b"GET",
        b"/",
        [(b"host", b"h"), (b"content-length", b"1"), (b"content-length", b"1")],
    ),
    "both framings": (
        b"GET",
        b"/",
        [(b"host", b"h"), (b"content-length", b"1"), (b"transfer-encoding", b"chunked")],
    ),
    "a coding other than chunked": (
        b"GET",
        b"/",
        [(b"host", b"h"), (b"transfer-encoding", b"gzip")],
    ),
}


@pytest.mark.parametrize("request_", UNSENDABLE.values(), ids=UNSENDABLE.keys())
def test_requests_http_1_1_cannot_carry_are_refused(
    request_: tuple[bytes, bytes, list[tuple[bytes, bytes]]],
) -> None:
    with pytest.raises(_h1.LocalProtocolError):
        _h1.request_head(*request_)


def test_a_body_is_framed_and_held_to_its_length() -> None:
    conn = _h1.ClientConnection()
    head = _h1.request_head(b"PUT", b"/", [(b"host", b"h"), (b"transfer-encoding", b"chunked")])
    sent = conn.send_request(head) + conn.send_data(b"abc") + conn.send_data(b"")
    sent += conn.send_end([(b"x-sig", b"1")])
    assert sent.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\nx-sig: 1\r\n\r\n")
    with pytest.raises(_h1.LocalProtocolError):  # one request at a time
        conn.send_request(head)

    head = _h1.request_head(b"PUT", b"/", [(b"host", b"h"), (b"content-length", b"3")])
    conn = _h1.ClientConnection()
    conn.send_request(head)
    assert conn.send_data(b"ab") == b"ab"
    with pytest.raises(_h1.BodyLengthError):  # longer
        conn.send_data(b"cd")
    conn = _h1.ClientConnection()
    conn.send_request(head)
    assert conn.send_data(b"ab") == b"ab"
    with pytest.raises(_h1.BodyLengthError):  # shorter
        conn.send_end()
    conn = _h1.ClientConnection()
    conn.send_request(_h1.request_head(b"PUT", b"/", [(b"host", b"h"), (b"content-length", b"0")]))
    with pytest.raises(_h1.LocalProtocolError):  # trailers need chunks
        conn.send_end([(b"x", b"1")])


def test_a_connection_carries_the_next_request_only_when_reusable() -> None:
    conn = _h1.ClientConnection()
    head = _h1.request_head(b"GET", b"/", [(b"host", b"h")])
    for _ in range(2):
        conn.send_request(head)
        conn.send_end()
        conn.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx")
        assert isinstance(conn.next_event(), _h1.Head)
        assert conn.next_event() == b"x"
        assert isinstance(conn.next_event(), _h1.End)
        conn.start_next_cycle()
    conn.send_request(head)
    conn.send_end()
    conn.receive_data(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    assert isinstance(conn.next_event(), _h1.Head)
    assert isinstance(conn.next_event(), _h1.End)
    with pytest.raises(_h1.LocalProtocolError):
        conn.start_next_cycle()
    conn = _h1.ClientConnection()
    with pytest.raises(_h1.LocalProtocolError):  # no request: no response
        conn.next_event()
    conn.receive_data(b"")
    with pytest.raises(_h1.LocalProtocolError):  # our misuse, not the server's fault
        conn.receive_data(b"late")


@pytest.mark.timeout(30, func_only=True)  # a hang guard: backtracking would take hours
def test_a_long_malformed_field_line_fails_without_backtracking() -> None:
    # each of these took time quadratic in its length with plain quantifiers (16 KiB
    # of spaces: 1.6 s); at 1 MiB, linear is milliseconds and quadratic hours
    spaces = b" " * (1 << 20)
    for block in (
        b"x:" + spaces + b"\x01\r\n",
        b"x: a" + spaces + b"\x01\r\n",
        b"x: " + b"a " * (1 << 19) + b"\x00\r\n",
    ):
        with pytest.raises(_h1.RemoteProtocolError):
            _h1._parse_fields(block)
    assert _h1._parse_fields(b"x: a" + spaces + b"b" + spaces + b"\r\n") == [
        (b"x", b"a" + spaces + b"b")
    ]
