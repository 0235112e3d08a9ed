"""The public API is exactly what ``trio_isyswasfa.__all__`` lists, each documented."""

from __future__ import annotations

import trio_isyswasfa


def test_all_names_exist_and_are_documented() -> None:
    for name in trio_isyswasfa.__all__:
        obj = getattr(trio_isyswasfa, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_no_private_module_leaks_a_public_name() -> None:
    public = {n for n in vars(trio_isyswasfa) if not n.startswith("_")}
    modules = {"engine", "http", "testing", "tools", "wasi"}  # subpackages, imported on demand
    assert public - modules - {"annotations"} == set(trio_isyswasfa.__all__)
