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
# Called with a room id when another relay's member count for it changed.
MembersChanged = Callable[[bytes], None]


class HubUnavailable(Exception):
    """The backplane cannot answer now: the relay decides alone."""


class Hub(Protocol):
    healthy: bool
    dropped: int  # frames for other relays lost because the backplane could not take them
    # False: room facts (expiry, member counts) are this relay's alone, and the relay
    # never calls agree_expiry, set_members, members or expiry.
    shares_rooms: bool

    async def start(self, deliver: RemoteDelivery, members_changed: MembersChanged) -> None: ...

    def room_opened(self, room_id: bytes) -> None:
        """This relay now has members in ``room_id``: start hearing other relays' frames."""

    def room_closed(self, room_id: bytes) -> None:
        """This relay has no member left in ``room_id``."""

    async def subscribed(self, room_id: bytes) -> None:
        """Return once frames and count changes of other relays for ``room_id`` reach us."""
        ...

    def publish(self, room_id: bytes, wire: bytes) -> None:
        """Send ``wire`` to the other relays' members of ``room_id``. Never blocks."""

    async def agree_expiry(self, room_id: bytes, proposed_ms: int, keep_ms: int) -> int:
        """The room's expiry as all relays know it (the first proposal wins)."""
        ...

    async def set_members(self, room_id: bytes, count: int) -> int:
        """Record this relay's member count; return the total across relays."""
        ...

    async def members(self, room_id: bytes) -> int:
        """The room's member count across relays."""
        ...

    async def expiry(self, room_id: bytes) -> int:
        """The room's expiry as any relay recorded it, 0 if none (agree_expiry's, read)."""
        ...

    async def close(self) -> None: ...


class MemoryHub:
    """One process, rooms in memory: there is nobody else to tell."""

    healthy = True
    shares_rooms = False
    dropped = 0

    async def start(self, deliver: RemoteDelivery, members_changed: MembersChanged) -> None:
        return None

    def room_opened(self, room_id: bytes) -> None:
        return None

    def room_closed(self, room_id: bytes) -> None:
        return None

    async def subscribed(self, room_id: bytes) -> None:
        return None

    def publish(self, room_id: bytes, wire: bytes) -> None:
        return None

    async def agree_expiry(self, room_id: bytes, proposed_ms: int, keep_ms: int) -> int:
        return proposed_ms

    async def set_members(self, room_id: bytes, count: int) -> int:
        return count

    async def members(self, room_id: bytes) -> int:
        raise HubUnavailable

    async def expiry(self, room_id: bytes) -> int:
        raise HubUnavailable

    async def close(self) -> None:
        return None
