"""The exception hierarchy of trio_isyswasfa.

Every exception we raise on purpose derives from :class:`IsyswasfaError`, so embedders
can catch ours without catching everything. Cancellation (``trio.Cancelled``) is never
turned into one of these.
"""

from __future__ import annotations


class IsyswasfaError(Exception):
    """Base class of every error trio_isyswasfa raises on purpose."""


class GuestProtocolError(IsyswasfaError):
    """The guest broke the isyswasfa protocol (an event that makes no sense in its state).

    The instance it came from is dead afterwards: guests are untrusted, and we do not
    guess what a confused guest meant.
    """


class HostProtocolError(IsyswasfaError):
    """The embedder misused the API (for example, called into a closed component)."""


class GuestTrap(IsyswasfaError):
    """The guest trapped (wasmtime's error is the ``__cause__``); its instance is dead."""


class InstanceDead(IsyswasfaError):
    """A call was made into an instance that has already failed or been closed."""


class LinkError(IsyswasfaError):
    """A component cannot be instantiated: it imports something the host does not provide,
    or lacks an export the host needs (such as its ``isyswasfa-poll-*`` function)."""


class LoadError(IsyswasfaError):
    """A file is not a WebAssembly component wasmtime can compile (or our reader can read).

    ``offset`` is the byte offset of the problem when the component reader found it.
    """

    offset: int | None = None


class ToolError(IsyswasfaError):
    """A build-time tool (WIT lowering, componentize, wasm-tools) failed; the message says why."""


class WasiError(IsyswasfaError):
    """A WASI operation failed with ``code`` (a WIT ``error-code`` case name).

    Host functions raise it; the linker boundary turns it into ``result::err(code)``.
    """

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message or code)
        self.code = code


class InternalError(IsyswasfaError):
    """A bug in trio_isyswasfa itself. Please report it."""
