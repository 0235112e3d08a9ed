"""What ``python -m trio_isyswasfa run`` imports: no HTTP server or client for a command.

Start-up is most of what a short ``run`` costs (bench/bench_cli.py measures it against
``wasmtime run``); hypercorn and h11 alone cost 70-130 ms of CPU of it here.
"""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
import trio_isyswasfa
import trio_isyswasfa.http
import trio_isyswasfa.http.types  # what every instance registers
heavy = ("hypercorn", "h11", "trio_isyswasfa.http._asgi", "trio_isyswasfa.http._client")
print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy))
trio_isyswasfa.http.serve, trio_isyswasfa.http.HttpClient  # still there, on first use
print(all(m in sys.modules for m in ("hypercorn", "h11")))
"""


def test_a_command_imports_no_http_server_or_client() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == ["[]", "True"]


def test_the_lazy_http_names_are_the_public_ones() -> None:
    import trio_isyswasfa.http as http

    for name in http.__all__:
        assert getattr(http, name) is not None
        assert name in dir(http)


def test_servers_can_name_the_app_factory() -> None:
    """hypercorn evaluates ``app_from_environment()`` in the module's namespace, where a
    name loaded on first use is not yet."""
    import trio_isyswasfa.http as http

    assert callable(eval("app_from_environment", vars(http)))
