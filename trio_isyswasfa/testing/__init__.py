"""Helpers for testing components: cached guest builds and WAT micro-components."""

from ._build import build_python_guest as build_python_guest
from ._build import guest_cache_dir as guest_cache_dir
from ._wat import build_wat_component as build_wat_component

__all__ = ["build_python_guest", "build_wat_component", "guest_cache_dir"]
