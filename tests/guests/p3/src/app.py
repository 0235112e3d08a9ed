"""A WASI 0.3 guest: componentize-py turns an ``async def`` export of an ``async func``
into the component model's native async ABI, which this host refuses by name."""

import wit_world


class WitWorld(wit_world.WitWorld):
    async def shout(self, s: str) -> str:
        return s.upper()
