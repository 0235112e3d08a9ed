"""Delete each capability check of the host in turn and show that a test goes red.

    python scripts/capability_checks.py            # every check (a few minutes)
    python scripts/capability_checks.py udp pool   # only checks whose name has a word

Each entry of CHECKS names a check, the source text that is the check, what it becomes
once deleted, and the tests that must fail then. The script copies the repository to a
temporary folder, deletes the check there (the working tree is never touched), runs
those tests and prints RED (a test caught the deletion: good) or GREEN (nothing did: a
missing test). A check whose text is no longer found prints MOVED: update its entry.
It exits 1 if any check stays green or moved, or if the tests fail before any deletion
(a deletion only counts when they pass with every check in place). docs/wasi.md lists
the same checks.

Not part of the test suite: it runs the chosen tests once per check.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FS = "trio_isyswasfa/wasi/filesystem.py"
SANDBOX = "trio_isyswasfa/wasi/_sandbox.py"
SOCKETS = "trio_isyswasfa/wasi/sockets.py"
IO = "trio_isyswasfa/wasi/io.py"
FS_TESTS = (
    "tests/test_wasi_sandbox.py",
    "tests/test_wasi_filesystem.py",
    "-k",
    "Sandbox or PathsLike or PermissionsPassDown or Descriptors or OpenModes or Races",
)
SOCKET_TESTS = ("tests/test_resources.py", "tests/test_wasi_sockets.py")
HTTP_TESTS = ("tests/test_http_fields.py", "tests/test_http_client.py")
WASI_HTTP = "trio_isyswasfa/http/wasi_http.py"
PROXY_TESTS = "tests/test_http_proxy.py"
PROBES2 = "tests/test_review_probes2.py"
PROBES3 = "tests/test_review_probes3.py"
PROBES4 = "tests/test_review_probes4.py"
IO_TESTS = ("tests/test_wasi_io_clocks_random.py", "-k", "Streams")
POOL = "trio_isyswasfa/http/_pool.py"
FIBER = "trio_isyswasfa/engine/_fiber.py"
# without its run limit a spinning guest runs on until the child process the tests run
# it in is killed (tests/test_limits.py's `spun`, 120 s), and the tests fail
RUN_LIMIT_TESTS = ("tests/test_limits.py",)
READY_CHECK = "if not task.flags & GUEST or task.callee_poll != poll or task.callee_state != state:"
SETTLE_CHECK = "if instance._sched.failure is not None or not clean:"


@dataclass(frozen=True)
class Check:
    """One check: ``source`` in ``path`` is the check; ``deleted`` replaces it.

    ``also`` lists further ``(path, source, deleted)`` edits made with it, for a check
    that lives in several places (each would catch the deletion of the others alone).
    """

    name: str
    path: str
    source: str
    deleted: str
    tests: tuple[str, ...]
    also: tuple[tuple[str, str, str], ...] = ()

    def edits(self) -> tuple[tuple[str, str, str], ...]:
        """Every ``(path, source, deleted)`` this deletion makes."""
        return ((self.path, self.source, self.deleted), *self.also)


CHECKS = [
    # -- engine: may_leave cleared while values are lowered into an instance
    Check(
        "engine: a guest's realloc cannot call out during a lowering (from Python)",
        "trio_isyswasfa/engine/_core.py",
        "leave[0] = 0\n        try:",
        "try:",
        ("tests/test_engine_may_leave.py",),
    ),
    Check(
        "engine: a guest's realloc cannot call out during a lowering (staged by the runner)",
        "trio_isyswasfa/engine/_shim.py",
        'body.append(f"(i32.store8 offset={staged_leave} (i32.const 0) (i32.const 0))")',
        "pass",
        ("tests/test_engine_may_leave.py",),
    ),
    # -- wasi:filesystem: read-only preopens, all the way down
    Check(
        "filesystem: read-only directory (create, remove, rename, link, set-times-at)",
        FS,
        'fd = self.directory()\n        if self.read_only:\n            raise WasiError("read-only")',
        "fd = self.directory()",
        FS_TESTS,
    ),
    Check(
        "filesystem: read-only open-at (write, create, truncate)",
        FS,
        "if d.read_only and (flags & _WRITE_FLAGS or open_flags & _MUTATING_OPEN):",
        "if False:",
        FS_TESTS,
    ),
    Check(
        "filesystem: read-only set-times on a descriptor",
        FS,
        "def set_times(self, d: Descriptor, atime: Any, mtime: Any) -> None:\n"
        "        if d.read_only:",
        "def set_times(self, d: Descriptor, atime: Any, mtime: Any) -> None:\n        if False:",
        FS_TESTS,
    ),
    Check(
        "filesystem: read-only write, write-via-stream, append-via-stream",
        FS,
        "fd = d.file(write=True)\n        if d.read_only:",
        "fd = d.file(write=True)\n        if False:",
        FS_TESTS,
    ),
    Check(
        "filesystem: read-only set-size",
        FS,
        'if d.read_only:\n            raise WasiError("read-only")\n        os.ftruncate',
        "os.ftruncate",
        FS_TESTS,
    ),
    Check(
        "filesystem: a descriptor's open mode (read / write)",
        FS,
        "if need not in self.flags:",
        "if False:",
        FS_TESTS,
    ),
    Check(
        "filesystem: no symbolic link to an absolute path",
        FS,
        'if old_path.startswith("/"):\n            raise WasiError("not-permitted"',
        'if False:\n            raise WasiError("not-permitted"',
        FS_TESTS,
    ),
    Check(
        "filesystem: open-at does not follow a final link unless asked (O_NOFOLLOW)",
        FS,
        "os_flags = mode | os.O_NOFOLLOW | _CLOEXEC",
        "os_flags = mode | _CLOEXEC",
        FS_TESTS,
    ),
    Check(
        "filesystem: rename-at never follows the old name's link",
        FS,
        "beneath(d.mutable_directory(), old_path, follow=False, create=True) as (old_at, old),",
        "beneath(d.mutable_directory(), old_path, follow=False) as (old_at, old),",
        FS_TESTS,
    ),
    # -- path resolution beneath a descriptor
    Check(
        "sandbox: no absolute path",
        SANDBOX,
        'if path.startswith("/"):\n        raise WasiError("not-permitted", f"absolute path',
        'if False:\n        raise WasiError("not-permitted", f"absolute path',
        FS_TESTS,
    ),
    Check(
        "sandbox: `..` never climbs above the descriptor",
        SANDBOX,
        'if len(stack) == 1:\n                    raise WasiError("not-permitted"',
        'if len(stack) == 1:\n                    continue\n                    raise WasiError("not-permitted"',
        FS_TESTS,
    ),
    Check(
        "sandbox: no link to an absolute path is followed",
        SANDBOX,
        'if target.startswith("/"):\n                    raise WasiError("not-permitted"',
        'if False:\n                    raise WasiError("not-permitted"',
        FS_TESTS,
    ),
    Check(
        "sandbox: at most 40 links per path",
        SANDBOX,
        "if links > MAX_SYMLINKS:",
        "if False:",
        FS_TESTS,
    ),
    Check(
        "sandbox: no NUL byte in a path",
        SANDBOX,
        'if "\\0" in path:',
        "if False:",
        FS_TESTS,
    ),
    Check(
        "sandbox: each step opened with O_NOFOLLOW (a link swapped in is not followed)",
        SANDBOX,
        "os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |",
        "os.O_RDONLY | os.O_DIRECTORY |",
        FS_TESTS,
    ),
    Check(
        "sandbox: a trailing slash names a directory",
        SANDBOX,
        "if dir_only and not stat.S_ISDIR(st.st_mode):",
        "if False:",
        FS_TESTS,
    ),
    # -- wasi:sockets: the allow-list
    Check(
        "sockets: no socket at all without an allow-list",
        SOCKETS,
        "def _new_socket(self, family_value: Any, kind: int) -> _Shared:\n"
        "        if not self.allow:",
        "def _new_socket(self, family_value: Any, kind: int) -> _Shared:\n        if False:",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: bind only to allowed addresses",
        SOCKETS,
        'self._deny_unless_allowed(address, port, "binding to")',
        "pass",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: TCP connect only to allowed addresses",
        SOCKETS,
        'self._deny_unless_allowed(address, port, "connecting to")\n'
        "        code = tcp.sock.connect_ex(addr)",
        "code = tcp.sock.connect_ex(addr)",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: a UDP stream connects only to allowed addresses",
        SOCKETS,
        'self._deny_unless_allowed(address, port, "connecting to")\n        try:',
        "try:",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: UDP datagrams go only to allowed addresses",
        SOCKETS,
        'self._deny_unless_allowed(address, port, "sending to")',
        "pass",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: a connected UDP stream sends to its peer only",
        SOCKETS,
        "if udp.remote is not None and addr[:2] != udp.remote[:2]:",
        "if False:",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: no name lookup without an allow-list",
        SOCKETS,
        "self._check_network(network)\n        if not self.allow:",
        "self._check_network(network)\n        if False:",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: a network handle is needed",
        SOCKETS,
        "def _check_network(self, rep: int) -> None:\n        self.ctx.table.get(rep, Network)",
        "def _check_network(self, rep: int) -> None:\n        pass",
        SOCKET_TESTS,
    ),
    Check(
        "sockets: no more datagrams than check-send allowed",
        SOCKETS,
        "if len(datagrams) > stream.permits:",
        "if False:",
        SOCKET_TESTS,
    ),
    # -- wasi:io and handles
    Check(
        "io: no write beyond check-write",
        IO,
        "if len(data) > stream.check_write():",
        "if False:",
        IO_TESTS,
    ),
    Check(
        "io: no write-zeroes beyond check-write",
        IO,
        "if n > stream.check_write():",
        "if False:",
        IO_TESTS,
    ),
    Check(
        "io: blocking writes of 4096 bytes at most",
        IO,
        "if n > BLOCKING_WRITE_MAX:",
        "if False:",
        IO_TESTS,
    ),
    Check(
        "handles: a handle stands for a live object of its kind",
        "trio_isyswasfa/_resources.py",
        "if not isinstance(obj, cls):",
        "if obj is None:",
        ("tests/test_resources.py",),
    ),
    # -- limits
    Check(
        "limits: max_handles",
        "trio_isyswasfa/_resources.py",
        "if self._limit is not None and len(self._items) >= self._limit:",
        "if False:",
        ("tests/test_limits.py",),
    ),
    Check(
        "limits: max_memory",
        "trio_isyswasfa/_engine.py",
        "self.store.set_limits(memory_size=self.limits.max_memory)",
        "pass",
        ("tests/test_limits.py",),
    ),
    Check(
        "limits: max_run_seconds",
        "trio_isyswasfa/_engine.py",
        "return None if limit is None else time.monotonic() + limit",
        "return None",
        RUN_LIMIT_TESTS,
    ),
    Check(
        "limits: max_run_seconds, own engine",
        FIBER,
        "if deadline is not None and time.monotonic() >= deadline:\n"
        '                raise self._over_time(call, "without returning to the host")\n'
        "            # a computing guest",
        "# a computing guest",
        RUN_LIMIT_TESTS,
    ),
    Check(
        "limits: max_memory, own engine",
        FIBER,
        "self._dispatch_page()\n            self.store.set_limits(memory_size=self.limits.max_memory)",
        "self._dispatch_page()",
        ("tests/test_limits.py",),
    ),
    # -- the isyswasfa protocol and the host
    Check(
        "protocol: a `ready` names the state its task reported as `pending`",
        "trio_isyswasfa/_protocol/_core.py",
        READY_CHECK,
        "if not task.flags & GUEST or task.callee_poll != poll:",
        ("tests/test_protocol.py",),
    ),
    Check(
        "protocol: ... from the poll function that reported it",
        "trio_isyswasfa/_protocol/_core.py",
        READY_CHECK,
        "if not task.flags & GUEST or task.callee_state != state:",
        ("tests/test_protocol.py",),
    ),
    Check(
        "host: only WASI 0.2.x imports link",
        "trio_isyswasfa/_host.py",
        'return (major, minor) == ("0", "2") and patch.isascii() and patch.isdigit()',
        "return True",
        ("tests/test_wasi_cli.py", "-k", "wasi_versions or wasi_0_2"),
    ),
    # -- wasi:http and serve
    Check(
        "http: outgoing requests only to the allow-list",
        "trio_isyswasfa/http/_client.py",
        "if not self.allowed(authority, scheme):",
        "if False:",
        HTTP_TESTS,
    ),
    Check(
        "http: an IPv6 literal in the allow-list admits that address only",
        "trio_isyswasfa/http/_client.py",
        "if ipaddress.IPv6Address(literal) != ipaddress.IPv6Address(host):",
        "if False:",
        (PROBES2, "-k", "ipv6"),
    ),
    Check(
        "http: a request's host is its authority, not a guest's field",
        "trio_isyswasfa/http/_client.py",
        'if n.lower() not in _HOP_BY_HOP and n.lower() != "host"',
        "if n.lower() not in _HOP_BY_HOP",
        (PROBES2, "-k", "host_field"),
    ),
    Check(
        "http: no control characters in a guest's field values",
        "trio_isyswasfa/http/types.py",
        '_BAD_VALUE = re.compile(rb"[\\x00-\\x08\\x0a-\\x1f\\x7f]")',
        '_BAD_VALUE = re.compile(rb"[\\x00\\r\\n]")',
        (PROBES2, "-k", "control_character"),
    ),
    Check(
        "http: at most max_connections_per_origin connections to one origin",
        "trio_isyswasfa/http/_client.py",
        "if pool.open < self._max_connections:",
        "if True:",
        ("tests/test_http_client.py", "-k", "connections_per_origin"),
    ),
    Check(
        "http: no outgoing requests without a handler",
        "trio_isyswasfa/http/types.py",
        "if self.outgoing is None:\n"
        "            request.close()\n"
        '            return _Outcome(_refused(ErrorCode("HTTP-request-denied")))\n'
        "        try:",
        "try:",
        ("tests/test_http_examples.py", "-k", "refused_by_default"),
    ),
    Check(
        "http: a guest sets no hop-by-hop header",
        "trio_isyswasfa/http/types.py",
        "if key in self.forbidden:",
        "if False:",
        HTTP_TESTS,
    ),
    Check(
        "http: immutable fields stay unchanged",
        "trio_isyswasfa/http/types.py",
        'if self.immutable:\n            raise HeaderError("immutable")',
        "if False:\n            pass",
        HTTP_TESTS,
    ),
    # -- wasi:http@0.2 (proxy components)
    Check(
        "http 0.2: no outgoing requests without a handler",
        WASI_HTTP,
        "if outgoing is None:",
        "if False:",
        (PROXY_TESTS, "-k", "allow_list_is_denied"),
    ),
    Check(
        "http 0.2: a guest sets none of wasmtime's forbidden fields",
        WASI_HTTP,
        "forbidden: ClassVar[frozenset[str]] = FORBIDDEN",
        "pass",
        (PROXY_TESTS, "-k", "field_checks"),
    ),
    Check(
        "http 0.2: no body written past its content-length",
        WASI_HTTP,
        "if limit is not None and body.written + len(data) > limit:",
        "if False:",
        (PROXY_TESTS, "-k", "overflow or past_its_length"),
    ),
    Check(
        "http 0.2: no body finished short of its content-length",
        WASI_HTTP,
        "            and self.written != self.content_length\n",
        "            and False\n",
        (PROXY_TESTS, "-k", "short"),
    ),
    Check(
        "http 0.2: an outgoing request whose body broke off is not sent as complete",
        WASI_HTTP,
        "Body(body.strict_reader(), body.trailers),",
        "Body(body.reader(), body.trailers),",
        (PROXY_TESTS, "-k", "dropped_unfinished"),
    ),
    Check(
        "serve: a proxy that never sets its response-outparam fails (500, retired)",
        "trio_isyswasfa/http/_asgi.py",
        "if not outparam.is_set:",
        "if False:",
        (PROXY_TESTS, "-k", "no-set"),
    ),
    Check(
        "serve: a proxy's response goes out only once the guest stands by it",
        "trio_isyswasfa/http/_asgi.py",
        "await _until_committed(instance, answer, outparam)",
        "pass",
        (PROXY_TESTS, "-k", "set-twice"),
    ),
    Check(
        "serve: a proxy instance whose response was cut off is not lent again",
        "trio_isyswasfa/http/_asgi.py",
        'raise GuestProtocolError(f"response body cut off: {body.problem}")',
        "pass",
        (PROXY_TESTS, "-k", "retired or cut_off"),
    ),
    Check(
        "http client: an address pattern of the allow-list admits IPv4 literals only",
        "trio_isyswasfa/http/_client.py",
        "and (not _is_address_pattern(pattern) or _is_v4_literal(host))",
        "and True",
        (PROBES4, "-k", "address_pattern"),
    ),
    Check(
        "http client: a response body cut off by the client's close fails its read",
        "trio_isyswasfa/http/_client.py",
        "if not over:  # cut off (the client closed, cancelling this): never a clean end",
        "if False:",
        (PROBES3, "-k", "clients_close"),
    ),
    Check(
        "serve: an interim (1xx) status is the guest's failure, on both paths (500)",
        "trio_isyswasfa/http/_asgi.py",
        "if status < 200:",
        "if False:",
        (PROBES3, PROBES2, "-k", "answering_10"),
    ),
    Check(
        "serve: a response content-length that is no number is left out, on both paths",
        "trio_isyswasfa/http/_asgi.py",
        'if declared is None:\n        return [(n, v) for n, v in headers if n != b"content-length"]',
        'if False:\n        return [(n, v) for n, v in headers if n != b"content-length"]',
        (PROBES3, PROBES2, "-k", "no_number"),
    ),
    Check(
        "serve: a draft response body written past its content-length is cut at it",
        "trio_isyswasfa/http/_asgi.py",
        "if sent > declared:",
        "if False:",
        (PROBES3, "-k", "unlike_its_content_length"),
    ),
    Check(
        "serve: a draft response body short of its content-length is cut off",
        "trio_isyswasfa/http/_asgi.py",
        "if declared is None or sent >= declared:",
        "if True:",
        (PROBES3, "-k", "unlike_its_content_length"),
    ),
    Check(
        "serve: bytes unread spare an idle connection a few times only (slowloris)",
        "trio_isyswasfa/http/_serve.py",
        "if spared >= _IDLE_SPARED or not _unread(sock):",
        "if not _unread(sock):",
        (PROBES4, "-k", "idle_connection"),
    ),
    Check(
        "serve: at most max_instances at once",
        "trio_isyswasfa/http/_asgi.py",
        "self._slots = _Slots(self.max_instances * self.per_instance)",
        "self._slots = _Slots(10**6)",
        ("tests/test_http_serve.py", "-k", "max_instances"),
    ),
    Check(
        "serve: a request cancelled while it waits for a slot leaves the line",
        "trio_isyswasfa/http/_asgi.py",
        "self._line.remove(handed)",
        "pass",
        ("tests/test_http_pool.py", "-k", "Slots"),
    ),
    Check(
        "serve: a slot handed to a request cancelled meanwhile is passed on",
        "trio_isyswasfa/http/_asgi.py",
        "if handed.is_set():\n                    self.release()",
        "if handed.is_set():\n                    pass",
        ("tests/test_http_pool.py", "-k", "Slots"),
    ),
    Check(
        "serve: a request's task that fails fails that request, never the app",
        "trio_isyswasfa/http/_asgi.py",
        "except Exception as exc:  # the request's failure, never the group's",
        "except KeyError as exc:",
        ("tests/test_http_serve.py", "-k", "fails_that_request_only"),
    ),
    Check(
        "serve: an instance goes back to the pool only if its request ended cleanly",
        POOL,
        SETTLE_CHECK,
        "if instance._sched.failure is not None:",
        ("tests/test_http_serve.py", "-k", "leaving_mid_stream"),
    ),
    Check(
        "serve: a failed instance is never lent again",
        POOL,
        SETTLE_CHECK,
        "if not clean:",
        ("tests/test_http_pool.py",),
        # the pool looks at the failure in three places: each would keep it out alone
        also=(
            (
                POOL,
                "if slot.instance._sched.failure is not None:\n                failed.append(slot)",
                "if False:\n                failed.append(slot)",
            ),
            (
                "trio_isyswasfa/_host.py",
                "return self._sched.failure is None and self._sched.calls_in_flight == 0",
                "return self._sched.calls_in_flight == 0",
            ),
        ),
    ),
    Check(
        "serve: at most max_idle instances kept",
        POOL,
        "and sum(1 for s in self._open if s.in_flight == 0) > self.max_idle",
        "and False",
        ("tests/test_http_pool.py",),
    ),
]


def passes(tests: tuple[str, ...], copy: Path) -> bool:
    """Whether ``tests`` pass in ``copy`` as it is now."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=copy,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.returncode == 0


def run(check: Check, copy: Path) -> str:
    """RED, GREEN or MOVED for one check, tried in ``copy`` (restored afterwards)."""
    originals: dict[Path, str] = {}
    try:
        for name, source, deleted in check.edits():
            path = copy / name
            text = path.read_text()
            originals.setdefault(path, text)
            if text.count(source) != 1:
                return "MOVED"
            path.write_text(text.replace(source, deleted))
        return "GREEN" if passes(check.tests, copy) else "RED"
    finally:
        for path, text in originals.items():
            path.write_text(text)


def main(words: list[str]) -> int:
    """Try every check (or those whose name contains one of ``words``)."""
    chosen = [c for c in CHECKS if not words or any(w.lower() in c.name.lower() for w in words)]
    bad = 0
    with tempfile.TemporaryDirectory(prefix="capability-checks-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "*_cache"))
        # a deletion counts only if its tests pass with every check in place
        for tests in dict.fromkeys(c.tests for c in chosen):
            if not passes(tests, copy):
                print(f"the tests {' '.join(tests)} fail with every check in place")
                return 1
        for check in chosen:
            verdict = run(check, copy)
            bad += verdict != "RED"
            print(f"{verdict:5} {check.name}", flush=True)
    print(f"{len(chosen) - bad} of {len(chosen)} deleted checks made a test fail")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
