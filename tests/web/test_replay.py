"""A relay replaying what it recorded: after a reload, the page does not show again a
message it had shown before, even in a room that keeps no history (PROTOCOL.md 7: the
replay filter starts empty, and the page seeds it from the key store's recent ids)."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from playwright.sync_api import expect
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from instantroom.protocol import frames
from instantroom.protocol.codes import SUBPROTOCOL
from instantroom.protocol.envelope import Kind, new_message, seal_envelope
from instantroom.protocol.join import sign_join_proof
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.testing import RelayProcess
from tests.web.conftest import TIMEOUT_MS, Phone, journal_entries, wait_for_stored

PASSWORD = "bob's long password"
F = TypeVar("F", bound=frames.Frame)


class RawMember:
    """A member that speaks raw frames, as a hostile relay replaying would write them: a
    blocking WebSocket (Playwright's loop runs in this thread, so no asyncio here)."""

    def __init__(self, ws: ClientConnection, keys: RoomKeys) -> None:
        self.ws = ws
        self.keys = keys
        self.device = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def recv(self) -> frames.Frame:
        data = self.ws.recv(timeout=TIMEOUT_MS / 1000)
        assert isinstance(data, bytes), data
        return frames.decode_frame(data)

    def expect(self, kind: type[F]) -> F:
        """The next frame of ``kind``, skipping presence updates and the page's own
        announcements (JOIN, HERE and LEAVE messages, PROTOCOL.md 5.7)."""
        while True:
            frame = self.recv()
            if isinstance(frame, kind):
                return frame
            assert isinstance(frame, frames.Presence | frames.Deliver), frame

    def join(self) -> None:
        self.ws.send(frames.encode_frame(frames.Join(self.keys.room_id, self.keys.public_key, 0)))
        challenge = self.expect(frames.Challenge)
        signature = sign_join_proof(self.keys.signing_key, self.keys.room_id, challenge.challenge)
        self.ws.send(frames.encode_frame(frames.Proof(self.keys.room_id, signature)))
        self.expect(frames.Joined)

    def sealed(self, ref: int, text: str, *, ahead_ms: int = 0) -> tuple[int, bytes]:
        """A PUBLISH frame of a text message of ours, sealed now (or dated ``ahead_ms``
        ahead, by a clock that fast): its ref, and its bytes to send (again)."""
        message = new_message(
            self.device,
            "alice",
            Kind.TEXT,
            text.encode(),
            token_bytes=secrets.token_bytes,
            now_ms=int(time.time() * 1000) + ahead_ms,
        )
        envelope = seal_envelope(self.keys, self.device, message, secrets.token_bytes(12))
        return ref, frames.encode_frame(frames.Publish(ref, self.keys.room_id, envelope))

    def publish(self, sealed: tuple[int, bytes]) -> None:
        """Send a PUBLISH frame as it is, and wait for the relay to take it."""
        ref, frame = sealed
        self.ws.send(frame)
        assert self.expect(frames.Ack) == frames.Ack(ref)


@contextlib.contextmanager
def raw_member(relay: RelayProcess, keys: RoomKeys) -> Iterator[RawMember]:
    """A ``RawMember`` joined in the room of ``keys`` on ``relay``, for the ``with`` block."""
    with connect(
        relay.ws_url,
        subprotocols=[Subprotocol(SUBPROTOCOL)],
        compression=None,
        proxy=None,
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        member = RawMember(ws, keys)
        member.join()
        yield member


def test_a_message_a_relay_sends_again_after_a_reload_is_not_shown_again(
    phones: Callable[..., Phone], relay: RelayProcess
) -> None:
    bob = phones()
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    room = bob.create_room("Not kept", "Bob")  # a new room keeps no history
    bob.open_room()
    keys = RoomKeys.from_minikey(room.key)

    with raw_member(relay, keys) as alice:
        bob.expect_members(2)
        first = alice.sealed(1, "shown once, never kept")
        alice.publish(first)
        bob.expect_message("shown once, never kept")
        # The key store keeps its id and time for the replay filter, never its text.
        contents = wait_for_stored(
            bob.page, PASSWORD, lambda c: len(c["rooms"][0].get("recent", [])) == 1
        )
        assert contents["rooms"][0]["messages"] == []
        assert "shown once, never kept" not in json.dumps(contents)

        bob.page.reload()  # the page's memory, its replay filter with it, is gone
        bob.unlock(PASSWORD)
        bob.by("room-item").first.click()
        bob.expect_online()
        bob.expect_members(2)  # joined again: what the relay sends now reaches the page
        expect(bob.by("message")).to_have_count(0)  # not kept

        # The relay sends the very same bytes again, then a new message.
        alice.publish(first)
        alice.publish(alice.sealed(2, "new"))
        bob.expect_message("new")
        expect(bob.message_locator("shown once, never kept")).to_have_count(0)
        expect(bob.by("message")).to_have_count(1)


def in_a_room_keeping_history(bob: Phone, relay: RelayProcess) -> RoomKeys:
    """Bob's first visit: a room of his that keeps its messages, on screen; its keys."""
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    room = bob.create_room("Kept", "Bob")
    bob.open_room()
    bob.page.get_by_role("button", name="Room options").click()
    bob.by("keep-history").check()
    return RoomKeys.from_minikey(room.key)


def test_a_message_shown_just_before_a_reload_is_kept_and_not_shown_twice(
    phones: Callable[..., Phone], relay: RelayProcess
) -> None:
    bob = phones()
    keys = in_a_room_keeping_history(bob, relay)

    with raw_member(relay, keys) as alice:
        bob.expect_members(2)
        before, last = alice.sealed(1, "the one before"), alice.sealed(2, "the last one")
        alice.publish(before)
        alice.publish(last)  # within a second of the save before: its save waits (throttled)
        bob.expect_message("the last one")
        bob.page.reload()  # at once: the waiting save is written as the page goes

        # The old page's last write may not land: the journal, written as the message came,
        # holds it then, and the unlock writes it into the record.
        bob.unlock(PASSWORD)
        contents = wait_for_stored(
            bob.page, PASSWORD, lambda stored: len(stored["rooms"][0]["messages"]) == 2
        )
        kept = contents["rooms"][0]
        assert [m["text"] for m in kept["messages"]] == ["the one before", "the last one"]
        assert len(kept["recent"]) == 2
        bob.by("room-item").first.click()
        bob.expect_online()
        bob.expect_members(2)
        # The relay sends both again: each shows once, from the kept history.
        alice.publish(before)
        alice.publish(last)
        alice.publish(alice.sealed(3, "new"))
        bob.expect_message("new")
        bob.expect_message("the one before")
        bob.expect_message("the last one")
        expect(bob.by("message")).to_have_count(3)


# Every "strict" write of the page (the key store's saves) fails from then on; the journal's
# "relaxed" writes go on.
REFUSE_SAVES = """
() => {
  const transaction = IDBDatabase.prototype.transaction;
  IDBDatabase.prototype.transaction = function (names, mode, options) {
    if (mode === "readwrite" && options?.durability === "strict") {
      throw new DOMException("Held back by the test.", "AbortError");
    }
    return transaction.call(this, names, mode, options);
  };
}
"""


def test_a_message_shown_before_the_tab_ends_is_kept_though_no_save_landed(
    phones: Callable[..., Phone], relay: RelayProcess
) -> None:
    """A tab that ends before its waiting save lands (a crash, a phone ending it, a slow
    device) keeps what it showed: the journal entry was written before it showed."""
    bob = phones()
    keys = in_a_room_keeping_history(bob, relay)

    with raw_member(relay, keys) as alice:
        bob.expect_members(2)
        alice.publish(alice.sealed(1, "the one before"))
        bob.expect_message("the one before")
        wait_for_stored(bob.page, PASSWORD, lambda stored: len(stored["rooms"][0]["messages"]) == 1)
        # From now on no save of this page lands: it is as good as gone.
        bob.page.evaluate(REFUSE_SAVES)
        alice.publish(alice.sealed(2, "the last one"))
        bob.expect_message("the last one")  # shown once its journal entry is written
        bob.page.close()

    page = bob.context.new_page()
    bob.page = page
    bob.open(relay.url)
    bob.unlock(PASSWORD)
    contents = wait_for_stored(
        page, PASSWORD, lambda stored: len(stored["rooms"][0]["messages"]) == 2
    )
    assert [m["text"] for m in contents["rooms"][0]["messages"]] == [
        "the one before",
        "the last one",
    ]
    assert journal_entries(page) == 0  # written into the record, and gone


def test_a_message_dropped_as_dated_ahead_is_said_in_its_room(
    phones: Callable[..., Phone], relay: RelayProcess
) -> None:
    """A member whose clock is 12 minutes fast is dropped by everyone (PROTOCOL.md 7): the
    room now says so, rather than leave the others wondering."""
    bob = phones()
    bob.open(relay.url)
    bob.set_password(PASSWORD)
    room = bob.create_room("Clocks", "Bob")
    bob.open_room()
    with raw_member(relay, RoomKeys.from_minikey(room.key)) as alice:
        bob.expect_members(2)
        expect(bob.by("dropped-ahead")).to_have_count(0)
        alice.publish(alice.sealed(1, "from a fast clock", ahead_ms=12 * 60_000))
        alice.publish(alice.sealed(2, "on time"))
        bob.expect_message("on time")
        expect(bob.by("dropped-ahead")).to_contain_text(
            "A message dated 12 minutes ahead of this device's clock was dropped"
        )
        expect(bob.message_locator("from a fast clock")).to_have_count(0)
