"""``fields``' checks on what a guest may set: hop-by-hop headers and immutable views."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trio_isyswasfa.http.types import FORBIDDEN, Fields, HeaderError, _authority, _path

CHANGES: list[tuple[str, Callable[[Fields, str], None]]] = [
    ("append", lambda f, name: f.append(name, b"x")),
    ("set", lambda f, name: f.set(name, [b"x"])),
    ("delete", lambda f, name: f.delete(name)),
]


@pytest.mark.parametrize("name", [*sorted(FORBIDDEN), "Transfer-Encoding", "CONNECTION"])
@pytest.mark.parametrize(("how", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_a_guest_cannot_set_hop_by_hop_headers(
    name: str, how: str, change: Callable[[Fields, str], None]
) -> None:
    fields = Fields([(name, b"mine")])  # the host's own entry
    with pytest.raises(HeaderError) as info:
        change(fields, name)
    assert info.value.code == "forbidden"
    assert fields.entries() == [(name, b"mine")]


def test_a_guest_list_with_a_hop_by_hop_header_is_refused() -> None:
    with pytest.raises(HeaderError) as info:
        Fields.checked([("accept", b"*/*"), ("Upgrade", b"h2c")])
    assert info.value.code == "forbidden"


@pytest.mark.parametrize(("how", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_an_immutable_view_cannot_change(how: str, change: Callable[[Fields, str], None]) -> None:
    fields = Fields([("accept", b"*/*")], immutable=True)
    with pytest.raises(HeaderError) as info:
        change(fields, "accept")
    assert info.value.code == "immutable"
    assert fields.entries() == [("accept", b"*/*")]
    assert fields.copy().entries() == [("accept", b"*/*")]  # a mutable copy may change


@pytest.mark.parametrize("bad", [" ", "/", "?", "#", "@", "\r", "\n", "\0"])
def test_a_request_authority_with_a_character_it_cannot_hold_is_refused(bad: str) -> None:
    assert _authority("example.com:8080") == "example.com:8080"
    assert _authority(None) is None
    with pytest.raises(ValueError, match="invalid authority"):
        _authority(f"exam{bad}ple.com")


@pytest.mark.parametrize("bad", ["", "/a b", "/a\r", "/a\n", "/a\0", "/a#frag"])
def test_a_request_path_with_a_character_it_cannot_hold_is_refused(bad: str) -> None:
    assert _path("/search?q=x&y=%20") == "/search?q=x&y=%20"
    assert _path(None) is None
    with pytest.raises(ValueError, match="invalid path"):
        _path(bad)


@pytest.mark.parametrize(
    ("entry", "code"),
    [
        (("Host", b"example.com"), "forbidden"),
        (("Transfer-Encoding", b"chunked"), "forbidden"),
        (("bad name", b"x"), "invalid-syntax"),
        (("x-ok", b"a\nb"), "invalid-syntax"),
    ],
)
def test_a_proxy_guests_list_is_checked_every_time_its_names_come(
    entry: tuple[str, bytes], code: str
) -> None:
    # fields.from-list keeps the names it found valid: a known name skips the token
    # check, never the forbidden one or the value's
    from trio_isyswasfa.http.wasi_http import P2Fields

    for _ in range(2):
        assert P2Fields.checked([("X-Fine", b"1")]).entries() == [("X-Fine", b"1")]
        with pytest.raises(HeaderError) as info:
            P2Fields.checked([("x-fine", b"2"), entry])
        assert info.value.code == code
