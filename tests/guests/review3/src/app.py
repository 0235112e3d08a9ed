"""A draft (wasi:http 0.3.0-draft) guest for the review's probes of the isyswasfa serve
path: its answer is spelled by the request's path, ``/STATUS/LENGTH/BODY``:

STATUS   the response's status code (set with ``set-status-code``; its failure traps)
LENGTH   the ``content-length`` field's value, or ``-`` for none
BODY     the body, written by a spawned task (empty if not given)

``/200/-/hello`` answers 200 ``hello``; ``/101/-/hello`` answers 101; ``/200/10/hello``
declares 10 bytes and sends 5.
"""

from isyswasfa_guest import spawn
from isyswasfa_guest.streams import write_all
from wit_world import exports
from wit_world.imports import pipe, types


class Handler(exports.Handler):
    async def handle(self, request: types.Request) -> types.Response:
        path = request.path_with_query() or "/"
        status, length, body = [*path.split("?")[0].split("/", 3)[1:], "", "", ""][:3]
        entries = [] if length in ("-", "") else [("content-length", length.encode())]
        tx, rx = pipe.make_pipe()
        data = body.encode()

        async def writer() -> None:
            with tx:
                if data:
                    await write_all(tx, data)

        spawn(writer())
        response = types.Response(types.Fields.from_list(entries), types.Body(rx, None))
        response.set_status_code(int(status or "200"))
        return response
