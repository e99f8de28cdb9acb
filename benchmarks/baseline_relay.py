"""The baseline: the plainest honest relay a competent engineer would write.

websockets' own server and its ``broadcast()`` helper; a room is the URL path; no join
proof, no limits, no crypto. Compression is off, as it is in InstantRoom's relay:
ciphertext does not compress, and per-connection deflate state would only cost memory.

    python benchmarks/baseline_relay.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def handler(ws: ServerConnection) -> None:
    room = rooms[ws.request.path if ws.request else "/"]
    room.add(ws)
    try:
        async for message in ws:
            broadcast([member for member in room if member is not ws], message)
    finally:
        room.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=70_000) as server:
        print(f"baseline listening port={server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
