"""The backplane: how frames reach members connected to other relay processes.

A relay delivers to its own members itself; the hub carries the same wire bytes to the
other relays sharing a room and hands theirs back. The in-memory hub (the default) has no
other relays, so it carries nothing. A Redis hub slots in behind the same interface.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

# Called with (room id, WebSocket wire bytes) for frames from other relays.
RemoteDelivery = Callable[[bytes, bytes], None]


class Hub(Protocol):
    healthy: bool

    async def start(self, deliver: RemoteDelivery) -> None: ...

    def room_opened(self, room_id: bytes) -> None:
        """This relay now has members in ``room_id``: start hearing other relays' frames."""

    def room_closed(self, room_id: bytes) -> None:
        """This relay has no member left in ``room_id``."""

    def publish(self, room_id: bytes, wire: bytes) -> None:
        """Send ``wire`` to the other relays' members of ``room_id``. Never blocks."""

    async def close(self) -> None: ...


class MemoryHub:
    """One process, rooms in memory: there is nobody else to tell."""

    healthy = True

    async def start(self, deliver: RemoteDelivery) -> None:
        return None

    def room_opened(self, room_id: bytes) -> None:
        return None

    def room_closed(self, room_id: bytes) -> None:
        return None

    def publish(self, room_id: bytes, wire: bytes) -> None:
        return None

    async def close(self) -> None:
        return None
