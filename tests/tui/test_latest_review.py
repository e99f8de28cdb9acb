"""Review of the chat's message numbers: read top to bottom, they go up, also when one of
ours still waiting for the relay, and not in kept history, is shown among its messages."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from instantroom.client.keystore import HistoryEntry
from instantroom.protocol.envelope import Kind, new_message, seal_envelope
from instantroom.protocol.kdf import RoomKeys
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import run
from instantroom.tui.app import ChatApp
from tests.tui.test_chat import NOWHERE, new_store, now_ms, on_screen, room

FINGERPRINT = "AAAA-BBBB-CCCC-DDDD"


def test_a_waiting_message_older_than_kept_history_is_numbered_in_its_place(
    tmp_path: Path,
) -> None:
    """History turned on after one of ours was written, which the relay has not taken yet:
    it comes before the kept messages on screen, and its number does too (it was given
    the next number, then moved up: the screen read 3, 1, 2)."""
    key = make_minikey(secrets.randbelow)
    written = now_ms() - 60_000
    history = [
        HistoryEntry(f"{n:032x}", written + 10_000 * n, "bob", FINGERPRINT, f"kept{n}")
        for n in (1, 2)
    ]
    store = new_store(
        tmp_path / "store.json", room(key, NOWHERE, keep_history=True, history=history)
    )
    message = new_message(
        store.device, "alice", Kind.TEXT, b"writtenfirst", token_bytes=secrets.token_bytes,
        now_ms=written,
    )  # fmt: skip
    envelope = seal_envelope(
        RoomKeys.from_minikey(key), store.device, message, secrets.token_bytes(12)
    )
    store.rooms[0].add_outgoing(message.message_id, message.timestamp_ms, envelope)
    store.save()

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            await member.until(lambda: "kept2" in member.conversation(), "the history")
            shown = [
                (int(found[1]), found[2])
                for line in member.conversation().splitlines()
                if (found := re.match(r"\s*(\d+) .*?(writtenfirst|kept\d)", line))
            ]
            assert [text for _, text in shown] == ["writtenfirst", "kept1", "kept2"]
            numbers = [number for number, _ in shown]
            assert numbers == sorted(numbers), shown

            # /delete takes the number read on screen.
            await member.say(f"/delete {numbers[0]}")
            await member.until(lambda: "writtenfirst" not in member.conversation(), "deleted")
            assert "kept1" in member.conversation()
            assert "kept2" in member.conversation()

    run(scenario())
