"""Markers for what the engine (wasmtime-py 50's component API) cannot do yet."""

from __future__ import annotations

import pytest

# Implemented, but wasmtime-py 50 traps lifting a host call that takes two borrowed
# handles, before our host function runs (see test_two_borrows_in_one_call_fail_with_a_
# clear_trap). These start passing when the engine seam moves to our canonical-ABI layer.
TWO_BORROWS = pytest.mark.xfail(strict=True, reason="wasmtime-py 50: two borrows in one call")
