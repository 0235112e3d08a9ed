"""HTTP/1.1 for the client's side of one connection, sans-IO: requests out, responses in.

Why our own and not h11 (which the server side keeps, through hypercorn): a guest
fanning out is the headline use, and one request through the client is mostly
protocol bookkeeping. h11 builds an event object per step, runs its state machine
on both sides and validates each field once per call; for a GET answered with 1 KiB
that was ~115 µs of CPU per request on this machine, about a quarter of the client's
whole cost, where this module spends ~26 µs (``bench/bench_hash_all.py``). The
client needs little of HTTP/1.1: one request at a time on a connection (no
pipelining), no upgrades, no tunnels, no server side.

Strict, as h11 is, and stricter where h11 is lenient (``tests/test_http_h1.py`` checks
that it never takes what h11 refuses, on valid and malformed input): a response with a malformed status line or field,
obsolete line folding, a bare LF as a line end, a transfer coding other than
``chunked``, both ``content-length`` and ``transfer-encoding``, conflicting lengths,
a bad chunk, a ``101`` (we never ask to switch protocols) or a head over 16 KiB
(h11's default) is a :class:`RemoteProtocolError`, and the connection is not reused.
A request that HTTP/1.1 cannot carry (a method, target, field name or value with
characters it does not allow, two ``host`` fields, a body longer or shorter than its
``content-length``) is a :class:`LocalProtocolError` before anything is sent for it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MAX_HEAD = 16 * 1024  # bytes of a response head, of a chunk's size line, of trailers

# Every run of whitespace and of visible characters below is matched possessively
# (``*+``, ``++``): a field value is runs of visible characters (and obs-text) split by
# runs of spaces and tabs, so there is one way to match a line, and a malformed one
# fails in time linear in its length (with plain quantifiers, ``x:`` followed by 16 KiB
# of spaces and a control character took 1.6 s of backtracking).
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]++")
# field-value (RFC 9110 5.5)
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff]++(?:[\t ]++[\x21-\x7e\x80-\xff]++)*+)?")
_TARGET = re.compile(rb"[\x21-\x7e]++")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t \x21-\x7e\x80-\xff]*+)?")
# field lines, each ended by CRLF: name, ":", optional whitespace, a field-value (no CR,
# LF or other controls), optional whitespace; checked whole by one match, then split
_FIELD_LINES = re.compile(
    rb"(?:[-!#$%&'*+.^_`|~0-9A-Za-z]++:[\t ]*+"
    rb"(?:[\x21-\x7e\x80-\xff]++(?:[\t ]++[\x21-\x7e\x80-\xff]++)*+)?[\t ]*+\r\n)*+"
)
_FIELD_LINE = re.compile(
    rb"([^:]++):[\t ]*+((?:[^\t \r\n]++(?:[\t ]++[^\t \r\n]++)*+)?)[\t ]*+\r\n"
)
_FRAMING = frozenset({b"connection", b"content-length", b"transfer-encoding"})
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[\t ]*+;[\t \x21-\x7e\x80-\xff]*+)?")
_DIGITS = re.compile(rb"[0-9]{1,18}")

Headers = list[tuple[bytes, bytes]]


class RemoteProtocolError(Exception):
    """The server broke HTTP/1.1 (or sent what this client does not take)."""


class LocalProtocolError(Exception):
    """The request cannot be sent over HTTP/1.1 as it is."""


class BodyLengthError(LocalProtocolError):
    """The request body is longer or shorter than its ``content-length``."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request head, checked and encoded (:func:`request_head`), and how its body
    is framed."""

    data: bytes
    method: bytes
    chunked: bool  # else ``length`` bytes long
    length: int


@dataclass(frozen=True, slots=True)
class Head:
    """A final response's head: status, fields (names in lower case, in order)."""

    status: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class End:
    """The end of a response body, with its trailer fields (empty: none)."""

    trailers: Headers


class _Need:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


class _Closed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "CLOSED"


NEED_DATA = _Need()  # more bytes must arrive first
CLOSED = _Closed()  # the server closed the connection with no response begun

Event = Head | bytes | End | _Need | _Closed

# what is being read (_END: the body is over, its End not yet taken)
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS = range(6)
_UNTIL_CLOSE, _END, _DONE = range(6, 9)


def _check_field(name: bytes, value: bytes) -> None:
    if not _TOKEN.fullmatch(name):
        raise LocalProtocolError(f"invalid field name {name!r}")
    if not _VALUE.fullmatch(value):
        raise LocalProtocolError(f"invalid value for the field {name!r}")


def _fields_out(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    out = []
    for name, value in headers:
        _check_field(name, value)
        out.append(b"%s: %s\r\n" % (name, value))
    return b"".join(out)


def _parse_fields(block: bytes) -> Headers:
    """Field lines (each ended by CRLF) as (lower-case name, value) pairs."""
    if not _FIELD_LINES.fullmatch(block):
        for line in block[:-2].split(b"\r\n"):
            if not _FIELD_LINES.fullmatch(line + b"\r\n"):
                raise RemoteProtocolError(f"malformed field line {line[:100]!r}")
        raise RemoteProtocolError("malformed field lines")
    return [(n.lower(), v) for n, v in _FIELD_LINE.findall(block)]


def _split(value: bytes) -> list[bytes]:
    """A comma-separated field value's elements, in lower case."""
    return [t for t in (p.strip(b" \t").lower() for p in value.split(b",")) if t]


def is_target(target: bytes) -> bool:
    """Whether ``target`` can be a request line's target (visible ASCII only)."""
    return _TARGET.fullmatch(target) is not None


def request_head(
    method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> RequestHead:
    """The request head to send. Its body is chunked if ``headers`` carry
    ``transfer-encoding: chunked``, else ``content-length`` bytes long (none: empty).

    Raises:
      LocalProtocolError: the request cannot be sent as it is.
    """
    if not _TOKEN.fullmatch(method):
        raise LocalProtocolError(f"invalid method {method[:100]!r}")
    if not _TARGET.fullmatch(target):
        raise LocalProtocolError(f"invalid request target {target[:100]!r}")
    hosts = lengths = 0
    chunked = False
    length = 0
    for name, value in headers:
        lower = name.lower()
        if lower == b"host":
            hosts += 1
        elif lower == b"content-length":
            if not _DIGITS.fullmatch(value):
                raise LocalProtocolError(f"invalid content-length {value[:30]!r}")
            lengths += 1
            length = int(value)
        elif lower == b"transfer-encoding":
            if value.lower() != b"chunked":
                raise LocalProtocolError("only transfer-encoding: chunked can be sent")
            chunked = True
    if hosts != 1:
        raise LocalProtocolError("a request needs exactly one host field")
    if lengths > 1 or (lengths and chunked):
        raise LocalProtocolError("conflicting body framing fields")
    data = b"%s %s HTTP/1.1\r\n%s\r\n" % (method, target, _fields_out(headers))
    return RequestHead(data, method, chunked, length)


class ClientConnection:
    """One connection's HTTP/1.1, client side: :meth:`send_request`, then the body
    through :meth:`send_data` and :meth:`send_end`; feed what arrives to
    :meth:`receive_data` and take events from :meth:`next_event` (:data:`NEED_DATA`,
    a :class:`Head`, body ``bytes``, an :class:`End`, or :data:`CLOSED`); after the
    :class:`End`, :meth:`reusable` says whether :meth:`start_next_cycle` may follow."""

    __slots__ = (
        "_buf",
        "_chunked_out",
        "_connect",
        "_eof",
        "_head_request",
        "_keep_alive",
        "_left",
        "_left_out",
        "_request_done",
        "_state",
        "_trailers_ok",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._eof = False
        self._state = _DONE  # nothing asked yet
        self._request_done = True
        self._head_request = False
        self._connect = False
        self._keep_alive = True
        self._chunked_out = False
        self._left_out = 0  # body bytes still to send (content-length)
        self._left = 0  # body bytes still to come (content-length, or this chunk)
        self._trailers_ok = False

    # -- sending ---------------------------------------------------------------------

    def send_request(self, head: RequestHead) -> bytes:
        """What to send for ``head`` (from :func:`request_head`); its body follows.

        Raises:
          LocalProtocolError: a request is under way on this connection.
        """
        if self._state != _DONE or not self._request_done:
            raise LocalProtocolError("a request is already under way on this connection")
        self._chunked_out = head.chunked
        self._left_out = head.length
        self._request_done = False
        self._head_request = head.method == b"HEAD"
        self._connect = head.method == b"CONNECT"
        self._state = _HEAD
        return head.data

    def send_data(self, data: bytes) -> bytes:
        """A piece of the request body, framed.

        Raises:
          BodyLengthError: more than the ``content-length`` (nothing is sent).
        """
        if self._request_done:
            raise LocalProtocolError("no request body is being sent")
        if not data:
            return b""
        if self._chunked_out:
            return b"%x\r\n%s\r\n" % (len(data), data)
        if len(data) > self._left_out:
            raise BodyLengthError("more body than its content-length")
        self._left_out -= len(data)
        return data

    def send_end(self, trailers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
        """The end of the request body (``trailers`` only when it is chunked).

        Raises:
          BodyLengthError: less body than its ``content-length``.
          LocalProtocolError: trailers on a body that is not chunked, or invalid ones.
        """
        if self._request_done:
            raise LocalProtocolError("no request body is being sent")
        if self._chunked_out:
            out = b"0\r\n%s\r\n" % _fields_out(trailers)
        elif trailers:
            raise LocalProtocolError("trailers need a chunked body")
        elif self._left_out:
            raise BodyLengthError("less body than its content-length")
        else:
            out = b""
        self._request_done = True
        return out

    # -- receiving -------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes that arrived (``b""``: the server closed its side)."""
        if data:
            if self._eof:
                raise LocalProtocolError("data after the end of the connection")
            self._buf = self._buf + data if self._buf else data
        else:
            self._eof = True

    @property
    def eof(self) -> bool:
        """Whether the server closed its side."""
        return self._eof

    def next_event(self) -> Event:
        """The next event of the response.

        Raises:
          RemoteProtocolError: the server broke the protocol; the connection is done.
        """
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _LENGTH:
            return self._length()
        if state == _UNTIL_CLOSE:
            if self._buf:
                data, self._buf = self._buf, b""
                return data
            if self._eof:
                self._state = _DONE
                return End([])
            return NEED_DATA
        if state == _END:
            self._state = _DONE
            return End([])
        if state == _DONE:
            raise LocalProtocolError("no response is expected")
        return self._chunked()

    def _head(self) -> Event:
        buf = self._buf
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise RemoteProtocolError("the response head is too long")
                if buf.count(b"\n") != buf.count(b"\r\n"):
                    raise RemoteProtocolError("a line of the response head ends in a bare LF")
                if self._eof:
                    if buf:
                        raise RemoteProtocolError("the connection closed inside a response head")
                    return CLOSED
                return NEED_DATA
            if end > MAX_HEAD:
                raise RemoteProtocolError("the response head is too long")
            first = buf.find(b"\r\n")
            m = _STATUS_LINE.fullmatch(buf, 0, first)
            if m is None:
                raise RemoteProtocolError(f"malformed status line {buf[: min(first, 100)]!r}")
            headers = _parse_fields(buf[first + 2 : end + 2])
            buf = self._buf = buf[end + 4 :]
            status = int(m.group(2))
            if status >= 200:
                break
            if status < 100:
                raise RemoteProtocolError(f"status {status}, which no response has")
            if status == 101:
                raise RemoteProtocolError("101 Switching Protocols, which was not asked for")
            # informational (1xx): skipped, the final response follows
        self._framing(m.group(1) == b"1", status, headers)
        return Head(status, headers)

    def _framing(self, http11: bool, status: int, headers: Headers) -> None:
        """Whether the connection stays open, and where the body ends (RFC 9112 6.3)."""
        codings: list[bytes] = []
        lengths: set[bytes] = set()
        keep_alive = http11
        for name, value in headers:
            if name in _FRAMING:
                if name == b"content-length":
                    lengths.update(p.strip(b" \t") for p in value.split(b","))
                elif name == b"transfer-encoding":
                    # one field, its value ``chunked`` alone, as h11 takes it: an empty
                    # list element (``chunked,``) or a second field is refused
                    codings.append(value.lower())
                elif b"close" in _split(value):
                    keep_alive = False
        self._keep_alive = keep_alive
        # the framing fields are checked even where no body follows
        if codings:
            if codings != [b"chunked"]:
                raise RemoteProtocolError("a transfer coding other than chunked")
            if lengths:
                raise RemoteProtocolError("both transfer-encoding and content-length")
        elif lengths:
            if len(lengths) > 1:
                raise RemoteProtocolError("conflicting content-length fields")
            (length,) = lengths
            if not _DIGITS.fullmatch(length):
                raise RemoteProtocolError(f"invalid content-length {length[:30]!r}")
            self._left = int(length)
        if self._connect and status < 300:
            raise RemoteProtocolError("a tunnel, which this client does not open")
        if self._head_request or status in (204, 304):
            self._state = _END
        elif codings:
            self._state = _CHUNK_SIZE
        elif lengths:
            self._state = _LENGTH if self._left else _END
        else:
            self._keep_alive = False  # the body ends where the connection does
            self._state = _UNTIL_CLOSE

    def _length(self) -> Event:
        buf = self._buf
        if not buf:
            if self._eof:
                raise RemoteProtocolError("the connection closed inside the response body")
            return NEED_DATA
        left = self._left
        if len(buf) <= left:
            self._buf = b""
            data = buf
        else:
            data, self._buf = buf[:left], buf[left:]
        self._left = left = left - len(data)
        if not left:
            self._state = _END
        return data

    def _chunked(self) -> Event:
        while True:
            state, buf = self._state, self._buf
            if state == _CHUNK_DATA:
                if not buf:
                    break
                left = self._left
                data = buf if len(buf) <= left else buf[:left]
                self._buf = buf[len(data) :]
                self._left = left - len(data)
                if not self._left:
                    self._state = _CHUNK_END
                return data
            if state == _CHUNK_SIZE:
                end = buf.find(b"\r\n", 0, MAX_HEAD + 2)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise RemoteProtocolError("a chunk size line is too long")
                    if b"\n" in buf:
                        raise RemoteProtocolError("a chunk size line ends in a bare LF")
                    break
                m = _CHUNK_LINE.fullmatch(buf, 0, end)
                if m is None:
                    raise RemoteProtocolError(f"malformed chunk size line {buf[: min(end, 40)]!r}")
                self._buf = buf[end + 2 :]
                self._left = int(m.group(1), 16)
                self._state = _CHUNK_DATA if self._left else _TRAILERS
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise RemoteProtocolError("a chunk longer than its size")
                self._buf = buf[2:]
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                if buf[:2] == b"\r\n":
                    block, rest = b"", buf[2:]
                else:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buf) > MAX_HEAD:
                            raise RemoteProtocolError("the trailers are too long")
                        if buf.count(b"\n") != buf.count(b"\r\n"):
                            raise RemoteProtocolError("a trailer line ends in a bare LF")
                        break
                    block, rest = buf[: end + 2], buf[end + 4 :]
                self._buf = rest
                self._state = _DONE
                return End(_parse_fields(block))
        if self._eof:
            raise RemoteProtocolError("the connection closed inside the response body")
        return NEED_DATA

    def reusable(self) -> bool:
        """Whether, after a whole response, the connection may carry another request:
        HTTP/1.1 without ``connection: close``, the request sent whole, the body
        framed by its length or chunks, and no bytes beyond it."""
        return (
            self._state == _DONE
            and self._request_done
            and self._keep_alive
            and not self._eof
            and not self._buf
        )

    def start_next_cycle(self) -> None:
        """Ready for the next request (only when :meth:`reusable`)."""
        if not self.reusable():
            raise LocalProtocolError("the connection cannot carry another request")


__all__ = [
    "CLOSED",
    "NEED_DATA",
    "BodyLengthError",
    "ClientConnection",
    "End",
    "Head",
    "LocalProtocolError",
    "RemoteProtocolError",
    "RequestHead",
    "is_target",
    "request_head",
]
