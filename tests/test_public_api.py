"""The public API is exactly what ``trio_isyswasfa.__all__`` (and the public
subpackages' ``__all__``) lists, each documented."""

from __future__ import annotations

import types

import pytest

import trio_isyswasfa
import trio_isyswasfa.testing

# each package, and the subpackages and modules it may hold besides its re-exports
PACKAGES = [
    (trio_isyswasfa, {"engine", "http", "testing", "tools", "wasi"}),
    (trio_isyswasfa.testing, {"conformance", "http_differential", "pytest_plugin"}),
]
IDS = [package.__name__ for package, _ in PACKAGES]


@pytest.mark.parametrize(("package", "modules"), PACKAGES, ids=IDS)
def test_all_names_exist_and_are_documented(package: types.ModuleType, modules: set[str]) -> None:
    for name in package.__all__:
        obj = getattr(package, name)
        assert obj.__doc__, f"{package.__name__}.{name} has no docstring"


@pytest.mark.parametrize(("package", "modules"), PACKAGES, ids=IDS)
def test_no_private_module_leaks_a_public_name(
    package: types.ModuleType, modules: set[str]
) -> None:
    public = {n for n in vars(package) if not n.startswith("_")}
    assert public - modules - {"annotations"} == set(package.__all__)
