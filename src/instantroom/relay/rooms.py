"""What a relay remembers of rooms besides their members: room facts.

Each room's expiry, once a member told it, for as long as the room lasts; then the
room's id alone for ``keep_ms`` more, so that an expired room cannot be opened again at
once. At most ``limit`` facts in all, so that nobody can fill the relay's memory by
making rooms: past it, new rooms are refused until old facts run out.
"""

from __future__ import annotations

import heapq


class RoomFacts:
    def __init__(self, keep_ms: int, limit: int) -> None:
        self.keep_ms = keep_ms
        self.limit = limit
        self._expiries: dict[bytes, int] = {}
        self._expired_until: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []  # (when something is due, room id)

    def __len__(self) -> int:
        return len(self._expiries) + len(self._expired_until)

    @property
    def full(self) -> bool:
        return len(self) >= self.limit

    def expiry(self, room_id: bytes) -> int | None:
        """The room's recorded expiry, or None if no member told one yet."""
        return self._expiries.get(room_id)

    def expired(self, room_id: bytes) -> bool:
        return room_id in self._expired_until

    def record(self, room_id: bytes, expires_ms: int) -> None:
        """Remember the room's expiry (the first one recorded stands)."""
        if expires_ms and room_id not in self._expiries and room_id not in self._expired_until:
            self._expiries[room_id] = expires_ms
            heapq.heappush(self._heap, (expires_ms, room_id))

    def due(self, now_ms: int) -> list[bytes]:
        """The rooms that have expired by ``now_ms``; forgets the ids kept long enough."""
        ended = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            when, room_id = heapq.heappop(heap)
            if self._expiries.get(room_id) == when:
                del self._expiries[room_id]
                self._expired_until[room_id] = when + self.keep_ms
                heapq.heappush(heap, (when + self.keep_ms, room_id))
                ended.append(room_id)
            elif self._expired_until.get(room_id) == when:
                del self._expired_until[room_id]
        return ended
