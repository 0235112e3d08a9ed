"""``may_leave`` while values are lowered into a guest.

The canonical ABI clears an instance's ``may_leave`` flag while the host lowers values
into it (``lower_flat_values`` in the specification's ``definitions.py``): the guest's
``cabi_realloc`` runs then, and may neither call an import nor use ``resource.new`` /
``resource.drop``. Otherwise a lowering that fails half way could not take back the
handles it added: the guest's ``realloc`` could have dropped a handle whose index the
lowering then reused for a host resource, and a later drop of that index would run the
host's destructor for a resource the guest never received.

Every lowering path of our engine is covered: an export's arguments lowered by the
runner's ``lower`` hook, staged strings copied in by the runner itself, the synchronous
call, and a host function's result lowered into its caller. The stock engine
(wasmtime-py) traps the same way, "cannot leave component instance" (wasmtime clears
the flag around its lowerings): both engines run these tests, but for the synchronous
call (the stock seam has none) and the failed lowering (the stock engine checks every
argument's type before it lowers any, so its ``realloc`` never runs there).
"""

from __future__ import annotations

from typing import Any

import pytest

from trio_isyswasfa import _engine
from trio_isyswasfa._errors import GuestTrap, HostProtocolError, InstanceDead, LinkError
from trio_isyswasfa.engine._component import OwnEngineInstance
from trio_isyswasfa.engine._reader import read_component
from trio_isyswasfa.testing import build_wat_component, bump_realloc_wat

WIT = """\
package test:leave;

interface host {
  resource counter;
  make-counter: func() -> counter;
  note: func(n: u32);
  name: func() -> string;
}

interface api {
  use host.{counter};
  arm: func(mode: u32);
  hold: func() -> u32;
  drop-held: func();
  greet: func(s: string) -> u32;
  greet-all: func(xs: list<string>) -> u32;
  take: func(xs: list<string>, c: counter, n: u32) -> u32;
  ask: func() -> u32;
}

world w {
  import host;
  export api;
}
"""

# ``mode`` 1: the guest's realloc calls the host's ``note``; 2: it drops the counter it
# holds (once); 0: it only allocates
_FIRST = """(if (i32.eq (global.get $mode) (i32.const 1)) (then (call $note (i32.const 7))))
    (if (i32.eq (global.get $mode) (i32.const 2)) (then
      (global.set $mode (i32.const 0))
      (call $drop_counter (global.get $held))))"""

WAT = f"""\
(module
  (import "test:leave/host" "make-counter" (func $make (result i32)))
  (import "test:leave/host" "[resource-drop]counter" (func $drop_counter (param i32)))
  (import "test:leave/host" "note" (func $note (param i32)))
  (import "test:leave/host" "name" (func $name (param i32)))
  (memory (export "memory") 1)
  (global $mode (mut i32) (i32.const 0))
  (global $held (mut i32) (i32.const 0))
{bump_realloc_wat(4096, first=_FIRST)}
  (func (export "test:leave/api#arm") (param i32)
    (global.set $mode (local.get 0)))
  (func (export "test:leave/api#hold") (result i32)
    (global.set $held (call $make))
    (global.get $held))
  (func (export "test:leave/api#drop-held")
    (call $drop_counter (global.get $held)))
  (func (export "test:leave/api#greet") (param i32 i32) (result i32)
    (local.get 1))
  (func (export "test:leave/api#greet-all") (param i32 i32) (result i32)
    (local.get 1))
  (func (export "test:leave/api#take") (param i32 i32 i32 i32) (result i32)
    (call $drop_counter (local.get 2))
    (local.get 1))
  (func (export "test:leave/api#ask") (result i32)
    (call $name (i32.const 1024))
    (i32.load (i32.const 1028)))
)
"""

API = "test:leave/api"
COUNTER = 11  # the host resource kind of `counter`


class Host:
    def __init__(self) -> None:
        self.notes: list[int] = []
        self.dropped: list[int] = []
        self.made = 0

    def make_counter(self) -> Any:
        self.made += 1
        return _engine.own(100 + self.made, COUNTER)

    def resolve(self, item: _engine.ImportedItem) -> _engine.Resolved:
        if item.func_type is None:
            assert item.name == "counter"
            return _engine.ResourceDef(COUNTER, self.dropped.append)
        funcs: dict[str, Any] = {
            "make-counter": self.make_counter,
            "note": self.notes.append,
            "name": lambda: "host",
        }
        if item.name not in funcs:
            raise LinkError(f"no host function {item.name}")
        return funcs[item.name]


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    wit = tmp_path_factory.mktemp("leave") / "leave.wit"
    wit.write_text(WIT)
    return build_wat_component(wit, "w", WAT)


class Instance:
    """One instance on either engine."""

    def __init__(self, kind: str, wasm: bytes, host: Host) -> None:
        self.kind = kind
        self.host = host
        if kind == "stock":
            raw = _engine.compile_component(wasm, use_cache=False)
            self.stock = _engine.EngineInstance(
                _engine.LinkPlan(raw), _engine.component_exports(raw), host.resolve
            )
        else:
            self.ours = OwnEngineInstance(read_component(wasm), host.resolve, use_cache=False)

    async def call(self, name: str, *args: Any) -> Any:
        if self.kind == "stock":
            return await self.stock.func(API, name).call(*args)
        return await self.ours.func(API, name).call(*args)

    def call_sync(self, name: str, *args: Any) -> Any:
        if self.kind == "stock":
            pytest.skip("the stock engine's seam calls an export only on the event loop")
        return self.ours.func(API, name).call_sync(*args)

    async def call_either(self, sync: bool, name: str, *args: Any) -> Any:
        """:meth:`call_sync` if ``sync``, else :meth:`call`."""
        if sync:
            return self.call_sync(name, *args)
        return await self.call(name, *args)

    def close(self) -> None:
        if self.kind == "stock":
            self.stock.close()
        else:
            self.ours.close()


@pytest.fixture(params=["stock", "ours"])
def instance(request: pytest.FixtureRequest, wasm: bytes) -> Any:
    inst = Instance(request.param, wasm, Host())
    yield inst
    inst.close()


def _trapped(inst: Instance, info: pytest.ExceptionInfo[GuestTrap], label: str) -> None:
    """The trap says the guest may not leave (ours also says what it tried)."""
    assert "cannot leave component instance" in str(info.value)
    if inst.kind == "ours":
        assert label in str(info.value)


# the export calls whose arguments go through the guest's realloc, one per path of ours:
# a string the runner copies in itself (staged), a list of strings the runner's
# ``lower`` hook lowers, and the same lowered synchronously
_LOWERINGS = [
    pytest.param("greet", ("héllo",), False, id="staged"),
    pytest.param("greet-all", (["a", "b"],), False, id="lower-hook"),
    pytest.param("greet-all", (["a", "b"],), True, id="sync"),
]


class TestMayLeaveWhileLowering:
    @pytest.mark.parametrize(("name", "args", "sync"), _LOWERINGS)
    async def test_a_realloc_cannot_call_an_import(
        self, instance: Instance, name: str, args: tuple[Any, ...], sync: bool
    ) -> None:
        await instance.call("arm", 1)
        with pytest.raises(GuestTrap) as info:
            await instance.call_either(sync, name, *args)
        _trapped(instance, info, "note")
        assert instance.host.notes == []  # the host function never ran
        with pytest.raises(InstanceDead):
            await instance.call("arm", 0)

    @pytest.mark.parametrize(("name", "args", "sync"), _LOWERINGS)
    async def test_a_realloc_cannot_drop_a_handle(
        self, instance: Instance, name: str, args: tuple[Any, ...], sync: bool
    ) -> None:
        assert await instance.call("hold") == 1
        await instance.call("arm", 2)
        with pytest.raises(GuestTrap) as info:
            await instance.call_either(sync, name, *args)
        _trapped(instance, info, "resource.drop of counter")
        assert instance.host.dropped == []  # the host's destructor never ran

    async def test_a_realloc_cannot_call_an_import_while_a_result_is_lowered(
        self, instance: Instance
    ) -> None:
        # a host function's string result goes through the caller's realloc
        assert await instance.call("ask") == 4
        await instance.call("arm", 1)
        with pytest.raises(GuestTrap) as info:
            await instance.call("ask")
        _trapped(instance, info, "note")
        assert instance.host.notes == []

    async def test_the_instance_may_call_out_after_a_lowering(self, instance: Instance) -> None:
        # the flag is set again once the lowering is over: the export may call out
        assert await instance.call("greet", "abc") == 3
        assert await instance.call("greet-all", ["a", "b", "c"]) == 3
        assert instance.call_sync("greet-all", ["a"]) == 1
        assert await instance.call("ask") == 4
        assert await instance.call("hold") == 1
        await instance.call("drop-held")
        assert instance.host.dropped == [101]


class TestFailedLowering:
    async def test_a_failed_lowering_cannot_leave_a_host_handle_behind(self, wasm: bytes) -> None:
        # (ours) the lowering of `take` calls realloc for the strings (which drops the held
        # counter, index 1), lowers the host's counter (index 1 again) and fails on the
        # last argument. Without may_leave cleared, taking the counter back out left it
        # at index 1, and the guest's next drop of its held index ran the host's
        # destructor of a counter it never received.
        instance = Instance("ours", wasm, Host())
        assert await instance.call("hold") == 1
        await instance.call("arm", 2)
        given = _engine.own(500, COUNTER)
        with pytest.raises(GuestTrap) as info:
            await instance.call("take", ["a"], given, "not a u32")
        _trapped(instance, info, "resource.drop of counter")
        assert instance.host.dropped == []
        with pytest.raises(InstanceDead):
            await instance.call("drop-held")
        assert instance.host.dropped == []  # neither the held counter's nor the given's
        instance.close()

    async def test_a_failed_lowering_runs_nothing(self, wasm: bytes) -> None:
        # (ours) with a realloc that only allocates, the failed lowering takes its
        # handles back out: the instance lives on, the counter given is still the host's
        host = Host()
        inst = Instance("ours", wasm, host)
        try:
            with pytest.raises(HostProtocolError):
                await inst.call("take", ["a"], _engine.own(500, COUNTER), "not a u32")
            assert await inst.call("hold") == 1  # index 1: the failed call's counter left
            await inst.call("drop-held")
            assert host.dropped == [101]
        finally:
            inst.close()
