"""Review of the chat as a person uses it: what is typed for a room that goes away while
it is open (it expires, or another program forgets it) is not sent to the room shown next."""

from __future__ import annotations

import secrets
from pathlib import Path

from textual.widgets import Input

from instantroom.client.keystore import KeyStore
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import run
from instantroom.tui.app import ChatApp
from tests.tui.test_chat import NOWHERE, PASSWORD, new_store, now_ms, on_screen, room


def test_a_draft_for_a_room_that_expires_is_not_sent_to_the_next_room(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    soon = room(make_minikey(secrets.randbelow), NOWHERE, "soon", expires_at_ms=now_ms() + 600_000)
    store = new_store(path, soon, room(make_minikey(secrets.randbelow), NOWHERE, "other"))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice", room="soon")) as member:
            field = member.app.query_one("#input", Input)
            await member.press(*"meant for soon")
            await member.until(lambda: field.value == "meant for soon", "the draft typed")
            # Its time is over now: set so, not waited for, the typing being done before
            # it, however slow the machine.
            store.find("soon").expires_at_ms = now_ms()
            await member.until(lambda: member.sidebar() == ["other"], "the room to expire")
            await member.until(lambda: "other on" in member.status(), "the other room shown")
            # Enter now would send it to "other": the draft is out of the input line...
            assert field.value == ""
            await member.press("enter")
            assert "waiting to send" not in member.conversation()
            assert not KeyStore.open(path, PASSWORD).rooms[0].outbox
            # ...and shown, unsent, to be copied.
            flat = " ".join(member.conversation().split())
            assert "What you were writing to 'soon' was not sent: meant for soon" in flat

    run(scenario())


def test_a_draft_is_kept_when_another_room_goes(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    store = new_store(
        path,
        room(make_minikey(secrets.randbelow), NOWHERE, "shown"),
        room(make_minikey(secrets.randbelow), NOWHERE, "soon", expires_at_ms=now_ms() + 1500),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice", room="shown")) as member:
            await member.press(*"still mine")
            await member.until(lambda: member.sidebar() == ["shown"], "the room to expire")
            assert member.app.query_one("#input", Input).value == "still mine"
            assert "was not sent" not in member.conversation()

    run(scenario())
