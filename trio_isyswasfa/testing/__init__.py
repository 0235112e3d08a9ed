"""Helpers for testing components: cached guest builds (more to come)."""

from ._build import build_python_guest as build_python_guest
from ._build import guest_cache_dir as guest_cache_dir

__all__ = ["build_python_guest", "guest_cache_dir"]
