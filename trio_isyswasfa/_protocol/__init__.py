"""The sans-IO core of the isyswasfa protocol.

It knows no event loop and no engine: the scheduler feeds it what guests and host
tasks did (poll outputs, completions, handle drops) and carries out the actions it
returns (deliver a poll input to poll function *i*, cancel host work, wake a host
caller). Handles are plain integers (reps) here; turning them into wasm handles is
the engine seam's job. This package must import neither trio/anyio nor wasmtime.
"""

from ._core import (
    Action,
    CancelHostWork,
    Deliver,
    ProtocolCore,
    Task,
    TaskKind,
    TaskState,
    WakeHostCaller,
)
from ._events import (
    InCancel,
    InCancelComplete,
    InListening,
    InReady,
    OutCancel,
    OutCancelComplete,
    OutListen,
    OutPending,
    OutReady,
    PollInput,
    PollOutput,
)

__all__ = [
    "Action",
    "CancelHostWork",
    "Deliver",
    "InCancel",
    "InCancelComplete",
    "InListening",
    "InReady",
    "OutCancel",
    "OutCancelComplete",
    "OutListen",
    "OutPending",
    "OutReady",
    "PollInput",
    "PollOutput",
    "ProtocolCore",
    "Task",
    "TaskKind",
    "TaskState",
    "WakeHostCaller",
]
