"""The chat shows messages in the order of their timestamps (PROTOCOL.md 10.4), also those
arriving live after later ones: a backlog whose refused PUBLISHes were sent again after
later ones had been taken (PROTOCOL.md 10.6) read 0..60, 101..109, 61..99 till the chat
was opened again."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from instantroom.client.keystore import KeyStore
from instantroom.protocol.envelope import Kind, new_message
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.session import MessageReceived
from instantroom.testing import run
from instantroom.tui.app import ChatApp
from tests.tui.test_chat import NOWHERE, PASSWORD, new_store, now_ms, on_screen, room
from tests.tui.test_hostile_relay_review import feed


def shown(conversation: str) -> list[tuple[int, str]]:
    """The messages on screen, top to bottom: (number, text)."""
    return [
        (int(found[1]), found[2])
        for line in conversation.splitlines()
        if (found := re.match(r"\s*(\d+) .*?\b(m\d)\b", line))
    ]


def test_a_message_arriving_after_later_ones_is_shown_and_numbered_in_its_place(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.json"
    store = new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, keep_history=True))
    bob = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    start = now_ms() - 60_000

    def from_bob(room_id: bytes, text: str, after_ms: int) -> MessageReceived:
        message = new_message(
            bob, "bob", Kind.TEXT, text.encode(), token_bytes=secrets.token_bytes,
            now_ms=start + after_ms,
        )  # fmt: skip
        return MessageReceived(room_id, message, bob.fingerprint, False)

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            (view,) = alice.app._views.values()
            assert view.client is not None
            sent = [("m0", 0), ("m2", 2000), ("m1", 1000)]
            await feed(alice, view.client, (from_bob(view.room_id, *m) for m in sent))
            await alice.until(lambda: len(shown(alice.conversation())) == 3, "the messages")
            await alice.until(
                lambda: [text for _, text in shown(alice.conversation())] == ["m0", "m1", "m2"],
                "the messages in the order they were written",
            )
            numbers = [number for number, _ in shown(alice.conversation())]
            assert numbers == [1, 2, 3]  # read in order, as /delete takes them

            await alice.say(f"/delete {numbers[1]}")  # the one shown in the middle
            await alice.until(lambda: "m1" not in alice.conversation(), "m1 deleted")
            assert [text for _, text in shown(alice.conversation())] == ["m0", "m2"]
            assert [e.text for e in KeyStore.open(path, PASSWORD).rooms[0].history] == [
                "m0",
                "m2",
            ]

            # A note stays where it was said: an older message does not go above it.
            await alice.say("/history")
            await feed(alice, view.client, [from_bob(view.room_id, "m3", 500)])
            await alice.until(lambda: "m3" in alice.conversation(), "m3")
            assert [line.text[:2] for line in view.lines] == ["m0", "m2", "Hi", "m3"]
            assert [line.number for line in view.lines if line.kind == "message"] == [1, 3, 4]

    run(scenario())


def test_a_room_view_and_its_lines_show_no_text_name_or_key_in_their_repr(
    tmp_path: Path,
) -> None:
    """A traceback with locals, a debugger or a log line may print them."""
    key = make_minikey(secrets.randbelow)
    store = new_store(tmp_path / "s.json", room(key, NOWHERE, keep_history=True))
    bob = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    message = new_message(
        bob, "bobby-tables", Kind.TEXT, b"meet at the old mill", token_bytes=secrets.token_bytes,
        now_ms=now_ms(),
    )  # fmt: skip

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice-cooper")) as alice:
            (view,) = alice.app._views.values()
            assert view.client is not None
            received = MessageReceived(view.room_id, message, bob.fingerprint, False)
            await feed(alice, view.client, [received])
            await alice.until(lambda: "old mill" in alice.conversation(), "the message")
            await alice.say("we will be there")
            await alice.until(lambda: "be there" in alice.conversation(), "our message")
            shown = repr(view) + repr(view.lines) + str(view.lines)
            assert "Line(kind='message'" in repr(view.lines)
            for secret in ("old mill", "be there", "bobby", "alice-cooper", key, bob.fingerprint):
                assert secret not in shown

    run(scenario())
