"""The chat against a hostile relay (review findings): an expiry that is no date, a flood
of ERROR frames, a flood of PRESENCE frames. None crashes the chat, grows it without
bound, or freezes it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import pytest
from websockets.exceptions import ConnectionClosed

from instantroom.client.connection import RoomClient, RoomGone
from instantroom.client.keystore import HistoryEntry, KeyStore
from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.session import Event, Joined, PresenceChanged, Refused
from instantroom.testing import run
from instantroom.tui import app as app_module
from instantroom.tui.app import ChatApp, RoomView, clock
from tests.client.test_room_client import FakeRelay, Peer
from tests.tui.test_chat import NOWHERE, PASSWORD, Member, new_store, now_ms, on_screen, room

FAR = 2**53 - 1  # past the year 9999: no date


def refused_lines(view: RoomView) -> list[str]:
    return [line.text for line in view.lines if line.text.startswith("The relay refused")]


def test_a_room_the_relay_says_expires_past_any_date_is_shown(tmp_path: Path) -> None:
    """Joined by its key alone (expiry not known), the room takes the relay's expiry: one
    past the year 9999 crashed the chat as its status line was drawn."""

    async def far(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            join = await peer.recv()
            assert isinstance(join, frames.Join)
            await peer.answer(join)
            await peer.recv()  # the PROOF
            await peer.send(frames.Joined(join.room_id, FAR, 1))
            await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(far) as relay:
            key = make_minikey(secrets.randbelow)
            store = new_store(tmp_path / "s.json", room(key, relay.url, expires_at_ms=0))
            async with on_screen(ChatApp(store, "alice")) as alice:
                await alice.until(
                    lambda: "expires in more than 100 years" in alice.status(), "the expiry"
                )
                assert "● connected" in alice.status()
                assert store.rooms[0].expires_at_ms == FAR
                label = alice.app.query_one(".room-label")
                assert "expires in more than 100 years" in str(label.render())

    run(scenario())


@pytest.mark.parametrize("timestamp_ms", [FAR, 2**64 - 1, 10**400, -(2**63), -1])
def test_a_message_time_that_is_no_date_is_shown_as_none(timestamp_ms: int) -> None:
    shown = clock(timestamp_ms)
    assert shown == "--:--" or len(shown) == 5


def test_a_flood_of_one_refusal_is_said_once(tmp_path: Path) -> None:
    """20 bytes an ERROR, each a line "The relay refused: ..." for ever: the same refusal
    (its code), whatever its reason, is said once in a room till it is joined again."""

    async def hostile(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            join = await peer.recv()
            assert isinstance(join, frames.Join)
            await peer.answer(join)
            await peer.answer(await peer.recv())  # PROOF -> JOINED
            for n in range(500):
                # A code we do not know: a known one that answers only a JOIN answers
                # none here, and is ignored unsaid (PROTOCOL.md 8.6).
                error = frames.Error(99, 0, join.room_id, f"no. {n}")
                await peer.send(error)
            await peer.send(frames.Presence(join.room_id, 9))  # after the flood
            await peer.serve()

    async def scenario() -> None:
        async with FakeRelay(hostile) as relay:
            store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), relay.url))
            async with on_screen(ChatApp(store, "alice")) as alice:
                await alice.until(lambda: "Online: 9" in alice.members(), "the flood's end")
                (view,) = alice.app._views.values()
                assert refused_lines(view) == ["The relay refused: no. 0"]
                assert len(alice.lines_with("The relay refused")) == 1

    run(scenario())


async def feed(alice: Member, client: RoomClient, events: Iterable[Event]) -> None:
    """Hand ``events`` to the chat as its listener does, one after the other."""

    async def handled() -> None:
        for event in events:
            await alice.app._on_event(client, event)

    await alice.do(handled())
    await alice.do(alice.pilot.pause())


def test_refusals_are_said_again_after_a_join_and_a_room_keeps_a_bounded_number_of_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "MAX_LINES_PER_ROOM", 100)
    monkeypatch.setattr(app_module, "MAX_CONVERSATION_ROWS", 60)
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            (view,) = alice.app._views.values()
            assert view.client is not None
            client, room_id = view.client, view.room_id
            refused = Refused(ErrorCode.NO_CHALLENGE, room_id, 0, "no challenge")
            await feed(alice, client, [refused] * 3)
            assert len(refused_lines(view)) == 1
            await feed(alice, client, [Joined(room_id, 0, 2), refused, refused])
            assert len(refused_lines(view)) == 2  # once more after the JOINED
            # "No place for now", with a reason the relay varies: said once too.
            full = (Refused(ErrorCode.ROOM_FULL, room_id, 0, f"full {n}") for n in range(5))
            await feed(alice, client, full)
            assert sum(line.text.startswith("No place for us now") for line in view.lines) == 1
            # Every code once: more lines than a room keeps, the oldest dropped.
            codes = list(range(300, 600))
            await feed(alice, client, (Refused(c, room_id, 0, f"code {c}") for c in codes))
            assert len(view.lines) == 100
            assert view.lines[-1].text == "The relay refused: code 599"
            log = alice.app.query_one("#conversation", app_module.Conversation)
            assert len(log.lines) <= 60
            assert "code 599" in alice.conversation()

    run(scenario())


class QueuedEvents:
    """A client whose events are all queued up: ``next_event`` returns at once, as the
    real one's does while its queue holds some; then it is closed."""

    url = "ws://127.0.0.1:9/ws"
    clock_offset_ms = None

    def __init__(self, events: Iterable[Event]) -> None:
        self.events = deque(events)

    async def next_event(self) -> Event:
        if not self.events:
            raise RoomGone
        return self.events.popleft()


def test_a_flood_of_presence_refreshes_the_panels_once_and_shows_the_last_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "alice")
    refreshes = 0
    refresh = app._refresh_panels

    def counted() -> None:
        nonlocal refreshes
        refreshes += 1
        refresh()

    async def scenario() -> None:
        async with on_screen(app) as alice:
            (view,) = app._views.values()
            assert view.client is not None
            monkeypatch.setattr(app, "_refresh_panels", counted)
            flood = [PresenceChanged(view.room_id, 2 + n % 50) for n in range(2000)]
            await feed(alice, view.client, flood)
            await alice.until(lambda: "Online: 51 " in alice.members(), "the last count")
            assert view.online == 51
            assert 1 <= refreshes <= 3  # once for the lot (a tick may add one)

    run(scenario())


def test_the_listener_gives_the_screen_turns_while_events_are_queued_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events queued up come without a wait: the listener let nothing else run (keys,
    redraws) till it had handled them all."""
    monkeypatch.setattr(app_module, "EVENTS_TURN", 0.0)  # a turn after each event
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as alice:
            (view,) = app._views.values()
            total = 300
            queued = QueuedEvents(PresenceChanged(view.room_id, 5 + n % 7) for n in range(total))
            seen: list[int] = []

            async def listened() -> None:
                listener = asyncio.create_task(app._listen(cast(RoomClient, queued)))
                while not listener.done():
                    seen.append(len(queued.events))
                    await asyncio.sleep(0)
                await listener

            await alice.do(listened())
            assert any(0 < left < total for left in seen)  # ran while events were queued
            await alice.until(lambda: "Online: 10 " in alice.members(), "the last count")

    run(scenario())


def test_clear_deletes_the_kept_messages_no_longer_on_screen_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A room shows its last MAX_LINES_PER_ROOM lines: /clear still remembers every kept
    message as deleted, for the replay window, not just those on screen."""
    monkeypatch.setattr(app_module, "MAX_LINES_PER_ROOM", 3)
    path = tmp_path / "s.json"
    history = [
        HistoryEntry(f"{n:02x}" * 16, now_ms() - 60_000 + n, "bob", "AAAA-BBBB-CCCC-DDDD", f"m{n}")
        for n in range(6)
    ]
    key = make_minikey(secrets.randbelow)
    store = new_store(path, room(key, NOWHERE, keep_history=True, history=history))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            (view,) = alice.app._views.values()
            assert [line.text for line in view.lines] == ["m3", "m4", "m5"]
            await alice.say("/clear")
            (kept,) = KeyStore.open(path, PASSWORD).rooms
            assert kept.history == []
            assert {e.message_id for e in kept.deleted} == {e.message_id for e in history}

    run(scenario())
