"""What a relay remembers of rooms besides their members: room facts.

Each room's expiry, once a member told it, for as long as the room lasts; then the
room's id alone for ``keep_ms`` more, so that an expired room cannot be opened again at
once. At most ``limit`` facts in all, so that nobody can fill the relay's memory by
making rooms: past it, the oldest expired ids are forgotten first, and new rooms are
refused only while every fact is a live room. One client address may record at most
``per_address`` live rooms, so that filling the relay takes many addresses, not one
loop of JOINs.
"""

from __future__ import annotations

import heapq
from collections import Counter


class RoomFacts:
    def __init__(self, keep_ms: int, limit: int, per_address: int) -> None:
        self.keep_ms = keep_ms
        self.limit = limit
        self.per_address = per_address
        self._expiries: dict[bytes, int] = {}
        self._expired_until: dict[bytes, int] = {}  # in the order they expired
        self._heap: list[tuple[int, bytes]] = []  # (when something is due, room id)
        self._stale = 0  # heap entries of ids forgotten early, skipped when due
        self._recorded_by: dict[bytes, str] = {}  # live room id -> the address that told it
        self._live_by_address: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._expiries) + len(self._expired_until)

    def make_space(self) -> bool:
        """Whether one more fact fits, forgetting the oldest expired ids if need be: a
        live room's expiry matters more than remembering that an old room ended."""
        expired = self._expired_until
        while len(self) >= self.limit and expired:
            del expired[next(iter(expired))]  # its heap entry is skipped when due
            self._stale += 1
        if self._stale > len(self) + 1024:
            # Skipped entries would otherwise stay for up to keep_ms (31 days by default),
            # one per room made meanwhile: the heap is made again from what is kept.
            self._heap = [(when, room_id) for room_id, when in self._expiries.items()]
            self._heap += [(until, room_id) for room_id, until in expired.items()]
            heapq.heapify(self._heap)
            self._stale = 0
        return len(self) < self.limit

    def may_record(self, address: str) -> bool:
        """Whether ``address`` may make one more live room here."""
        return self._live_by_address[address] < self.per_address

    def expiry(self, room_id: bytes) -> int | None:
        """The room's recorded expiry, or None if no member told one yet."""
        return self._expiries.get(room_id)

    def expired(self, room_id: bytes) -> bool:
        return room_id in self._expired_until

    def record(self, room_id: bytes, expires_ms: int, address: str) -> None:
        """Remember the room's expiry, told by ``address`` (the first one recorded stands)."""
        if expires_ms and room_id not in self._expiries and room_id not in self._expired_until:
            self._expiries[room_id] = expires_ms
            heapq.heappush(self._heap, (expires_ms, room_id))
            self._recorded_by[room_id] = address
            self._live_by_address[address] += 1

    def shorten(self, room_id: bytes, expires_ms: int) -> None:
        """Bring a live room's recorded expiry forward to ``expires_ms``: another relay
        recorded an earlier one while they could not agree, and the earlier holds."""
        if 0 < expires_ms < self._expiries.get(room_id, 0):
            self._expiries[room_id] = expires_ms
            heapq.heappush(self._heap, (expires_ms, room_id))
            self._stale += 1  # the later entry, skipped when due

    def next_due(self) -> int | None:
        """When ``due`` may next find something (ms), or None: nothing is kept. It may
        find nothing then (an entry skipped as stale); never something earlier."""
        return self._heap[0][0] if self._heap else None

    def due(self, now_ms: int) -> list[bytes]:
        """The rooms that have expired by ``now_ms``; forgets the ids kept long enough."""
        ended = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            when, room_id = heapq.heappop(heap)
            if self._expiries.get(room_id) == when:
                del self._expiries[room_id]
                address = self._recorded_by.pop(room_id)
                self._live_by_address[address] -= 1
                if not self._live_by_address[address]:
                    del self._live_by_address[address]
                self._expired_until[room_id] = when + self.keep_ms
                heapq.heappush(heap, (when + self.keep_ms, room_id))
                ended.append(room_id)
            elif self._expired_until.get(room_id) == when:
                del self._expired_until[room_id]
        return ended
