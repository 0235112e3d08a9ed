"""Which engine runs a component when the caller names none (``_seam.default_engine``)."""

from __future__ import annotations

import pytest

from trio_isyswasfa._errors import HostProtocolError
from trio_isyswasfa._seam import ENGINE_VARIABLE, default_engine


def test_our_engine_is_the_default_and_the_variable_chooses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENGINE_VARIABLE, raising=False)
    assert default_engine() == "own"
    monkeypatch.setenv(ENGINE_VARIABLE, "")
    assert default_engine() == "own"
    monkeypatch.setenv(ENGINE_VARIABLE, "wasmtime")
    assert default_engine() == "wasmtime"
    monkeypatch.setenv(ENGINE_VARIABLE, "neither")
    with pytest.raises(HostProtocolError, match="unknown engine 'neither'"):
        default_engine()
