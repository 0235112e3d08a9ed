"""``scripts/capability_checks.py`` stays in step with the code: every check it deletes
is still found, exactly once, where it says (otherwise the script prints MOVED and
proves nothing), and the tests it runs exist. Reading files only: fast."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "capability_checks", ROOT / "scripts" / "capability_checks.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


SCRIPT = load_script()


@pytest.mark.parametrize("check", SCRIPT.CHECKS, ids=lambda check: check.name)
def test_each_deleted_check_is_found_exactly_once(check: Any) -> None:
    for path, source, deleted in check.edits():
        text = (ROOT / path).read_text()
        assert text.count(source) == 1, (
            f"{path}: the check's text is found {text.count(source)} times"
        )
        assert source != deleted


@pytest.mark.parametrize("check", SCRIPT.CHECKS, ids=lambda check: check.name)
def test_the_tests_of_each_check_exist(check: Any) -> None:
    tests = check.tests
    files = [word for word in tests if word.endswith(".py")]
    assert files
    assert tests[0] in files
    for name in files:
        assert (ROOT / name).is_file(), name


def test_names_are_unique() -> None:
    names = [check.name for check in SCRIPT.CHECKS]
    assert len(names) == len(set(names))
