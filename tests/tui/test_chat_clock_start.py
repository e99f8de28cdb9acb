"""The chat as it starts: a room its relay says is not over yet, though this computer's
clock (days fast) says so, is not deleted (the store comes purged by ``open_store``)."""

from __future__ import annotations

import secrets
from pathlib import Path

from textual.widgets import Static

from instantroom.client.connection import relay_clock_offsets
from instantroom.client.keystore import KeyStore
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import run
from instantroom.tui.app import ChatApp
from tests.client.test_room_client import FakeRelay, serving
from tests.tui.test_chat import PASSWORD, new_store, now_ms, on_screen, room

DAY_S = 86_400


async def asked_as_chat_does(server: str) -> None:
    """Ask the relay its clock before the chat starts, as ``instantroom chat`` does (its
    ``open_store`` asks the relays of the rooms over by this clock). Without it the chat's
    first tick, a second in, could come before its handshake on a loaded machine, and judge
    the room by this clock alone."""
    assert server in await relay_clock_offsets([server])


def test_the_chat_deletes_no_room_at_start_that_its_relay_keeps(tmp_path: Path) -> None:
    path = tmp_path / "store.json"

    async def scenario() -> list[str]:
        async with FakeRelay(serving, clock_off_by=-3 * DAY_S) as behind:  # 3 days fast
            ended = now_ms() - 2 * DAY_S * 1000  # by this clock; a day left by the relay's
            store = new_store(
                path, room(make_minikey(secrets.randbelow), behind.url, "team", expires_at_ms=ended)
            )
            await asked_as_chat_does(behind.url)
            async with on_screen(ChatApp(store, "alice")) as member:
                await member.until(lambda: "connected" in member.status(), "connected")
                await member.do(member.pilot.pause(1.0))  # a tick, which deletes what is over
                return member.sidebar()

    assert run(scenario()) == ["team"]
    assert [r.label for r in KeyStore.open(path, PASSWORD).rooms] == ["team"]


def test_the_chat_shows_a_room_its_relay_kept_with_the_time_left_by_the_relay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.json"

    async def scenario() -> tuple[list[str], str]:
        async with FakeRelay(serving, clock_off_by=-3 * DAY_S) as behind:  # 3 days fast
            ended = now_ms() - 2 * DAY_S * 1000
            store = new_store(
                path, room(make_minikey(secrets.randbelow), behind.url, "team", expires_at_ms=ended)
            )
            await asked_as_chat_does(behind.url)
            async with on_screen(ChatApp(store, "alice")) as member:
                await member.until(lambda: "connected" in member.status(), "connected")
                await member.do(member.pilot.pause(1.0))
                labels = member.app.query(".room-label").results(Static)
                return [str(label.content) for label in labels], member.status()

    sidebar, status = run(scenario())
    assert sidebar == ["team\nexpires in 24 h"]
    assert "(in 24 h)" in status
