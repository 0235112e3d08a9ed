"""Helpers for testing components and their cancellation and concurrency.

* :func:`check_cancellation` cancels a call at each of its suspension points and
  reports which point went wrong, and how.
* :func:`assert_quiet` / :func:`leaks` check that an instance left nothing behind, once
  :func:`settle` let it finish what a call left in motion.
* :func:`build_python_guest` and :func:`build_rust_guest` build a guest once, cached
  on its sources (a missing Rust toolchain raises :class:`RustToolchainMissing`);
  :func:`build_rust_wasip3` builds a Rust guest's upgrade path (a native WASI 0.3
  component, for wasmtime's own 0.3 host);
  :func:`build_python_component`, :func:`build_rust_component` and
  :func:`build_js_component` do the same for plain WASI 0.2 components, written as
  people outside this project write them (componentize-py; the ``wasi`` crate through
  a preview1 adapter; componentize-js);
  :func:`build_wat_component` makes tiny components from WAT text.
* :func:`open_lifespan` runs an ASGI app's lifespan (such as a
  :class:`~trio_isyswasfa.http.ComponentApp`'s) and :func:`asgi_request` sends it one
  request, in-process: no server, no HTTP parser, no port (:func:`asgi_scope` gives a
  request's scope to a test that plays the client itself).
* :mod:`trio_isyswasfa.testing.conformance` runs a WASI command component on our host
  and on wasmtime's and says how the results differ (the differential conformance
  harness; ``python -m trio_isyswasfa.testing.conformance`` prints the score).
* :mod:`trio_isyswasfa.testing.http_differential` serves a ``wasi:http/proxy``
  component with ``wasmtime serve`` and with ours, sends both one fixed request set
  and reports how the answers differ.
* The pytest plugin (``trio_isyswasfa.testing.pytest_plugin``, installed as an entry
  point) provides fixtures built on these.

Guest time follows the event loop's clock, so ``trio.testing.MockClock`` and
pytest-trio's ``autojump_clock`` fixture drive guests too.
"""

from ._asgi import AsgiResponse as AsgiResponse
from ._asgi import asgi_request as asgi_request
from ._asgi import asgi_scope as asgi_scope
from ._asgi import open_lifespan as open_lifespan
from ._build import JsToolchainMissing as JsToolchainMissing
from ._build import RustToolchainMissing as RustToolchainMissing
from ._build import build_js_component as build_js_component
from ._build import build_python_component as build_python_component
from ._build import build_python_guest as build_python_guest
from ._build import build_rust_component as build_rust_component
from ._build import build_rust_guest as build_rust_guest
from ._build import build_rust_wasip3 as build_rust_wasip3
from ._build import guest_cache_dir as guest_cache_dir
from ._cancellation import CancellationReport as CancellationReport
from ._cancellation import CheckpointResult as CheckpointResult
from ._cancellation import assert_quiet as assert_quiet
from ._cancellation import check_cancellation as check_cancellation
from ._cancellation import leaks as leaks
from ._cancellation import settle as settle
from ._wat import build_wat_component as build_wat_component
from ._wat import bump_realloc_wat as bump_realloc_wat

__all__ = [
    "AsgiResponse",
    "CancellationReport",
    "CheckpointResult",
    "JsToolchainMissing",
    "RustToolchainMissing",
    "asgi_request",
    "asgi_scope",
    "assert_quiet",
    "build_js_component",
    "build_python_component",
    "build_python_guest",
    "build_rust_component",
    "build_rust_guest",
    "build_rust_wasip3",
    "build_wat_component",
    "bump_realloc_wat",
    "check_cancellation",
    "guest_cache_dir",
    "leaks",
    "open_lifespan",
    "settle",
]
