"""The full-screen chat, driven by Textual's pilot, against a real relay process.

Each app runs headless in a task of its own (Textual keeps the running app in a context
variable, and a task has its own context), so several members can talk at once. Waits
poll the screen with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import fcntl
import io
import os
import pty
import secrets
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from rich.console import Console
from textual import events
from textual.pilot import Pilot
from textual.widgets import Input, RichLog, Static

from instantroom.cli import build_parser
from instantroom.client import keystore
from instantroom.client.connection import RoomClient
from instantroom.client.invite import format_invite
from instantroom.client.keystore import HistoryEntry, KeyStore, StoredRoom, WrongPassword
from instantroom.protocol import frames
from instantroom.protocol.codes import CloseCode, ErrorCode
from instantroom.protocol.envelope import Kind, new_message, seal_envelope
from instantroom.protocol.kdf import DeviceKey, RoomKeys, private_key_bytes
from instantroom.protocol.minikey import format_minikey, make_minikey
from instantroom.protocol.session import MessageReceived, PresenceChanged
from instantroom.rooms_cli import cmd_chat
from instantroom.testing import RelayProcess, raw_client, run, running_relay, text_publish
from instantroom.tui import app as app_module
from instantroom.tui.app import HELP, ChatApp, Line, PasswordScreen
from tests.client.test_cli import signals_at_default
from tests.client.test_room_client import (
    FakeRelay,
    Peer,
    free_port,
    joined_then_closed,
    serving,
)
from tests.client.test_rooms_cli import decode, rasterise_terminal

PASSWORD = "a long enough password"
FAST_KDF = {"name": "argon2id", "iterations": 1, "lanes": 1, "memory_kib": 1024}
NOWHERE = "http://127.0.0.1:9/"  # nothing listens there: the app keeps trying to connect
HOUR_MS = 3_600_000
T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_store(path: Path, *rooms: StoredRoom) -> KeyStore:
    store = KeyStore.create(path, PASSWORD, kdf=FAST_KDF)
    for room in rooms:
        store.add_room(room)
    store.save()
    return store


def room(
    key: str,
    server: str,
    label: str = "team",
    *,
    expires_at_ms: int | None = None,
    keep_history: bool = False,
    history: list[HistoryEntry] | None = None,
) -> StoredRoom:
    expires = now_ms() + HOUR_MS if expires_at_ms is None else expires_at_ms
    return StoredRoom(key, label, server, expires, keep_history, list(history or []))


@dataclass
class Member:
    """An app on screen and its pilot; ``do`` runs a coroutine in the app's context."""

    app: ChatApp
    pilot: Pilot[None]
    context: contextvars.Context

    async def do(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return await asyncio.create_task(coroutine, context=self.context)

    async def press(self, *keys: str) -> None:
        await self.do(self.pilot.press(*keys))

    async def say(self, text: str) -> None:
        """Put ``text`` in the input line and press Enter."""

        async def typed() -> None:
            self.app.query_one("#input", Input).value = text
            await self.pilot.press("enter")

        await self.do(typed())

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let the app run until ``condition()`` holds; fail after 20 seconds (a chat
        connecting while the suite's other processes hold both cores had taken over 10)."""
        deadline = time.monotonic() + 20.0
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await self.do(self.pilot.pause(0.05))

    # what is on the screen, as text

    def conversation(self) -> str:
        log = self.app.query_one("#conversation", RichLog)
        return "\n".join(strip.text for strip in log.lines)

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.conversation().splitlines() if text in line]

    def members(self) -> str:
        return str(self.app.query_one("#members", Static).content)

    def status(self) -> str:
        return str(self.app.query_one("#status", Static).content)

    def sidebar(self) -> list[str]:
        labels = self.app.query(".room-label").results(Static)
        return [str(label.content).splitlines()[0] for label in labels]

    def notes(self) -> list[str]:
        """The notifications on screen (those whose time is not up yet)."""
        return [note.message for note in self.app._notifications]


@contextlib.asynccontextmanager
async def on_screen(app: ChatApp, size: tuple[int, int] = (120, 40)) -> AsyncIterator[Member]:
    """Run ``app`` headless, ``size`` (columns, rows), in a task of its own.

    Textual keeps the running app in a context variable: each app gets its task (and
    context), and whatever drives it runs in that context (``Member.do``).
    """
    started: asyncio.Future[Member] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def host() -> None:
        try:
            async with app.run_test(size=size) as pilot:
                started.set_result(Member(app, pilot, contextvars.copy_context()))
                await done.wait()
        except Exception as exc:
            if started.done():
                raise
            started.set_exception(exc)  # the app failed to start: say why

    task = asyncio.create_task(host())
    try:
        yield await started
    finally:
        done.set()
        await task


def kept(path: Path) -> list[str]:
    return [entry.text for entry in KeyStore.open(path, PASSWORD).rooms[0].history]


def two_stores(
    tmp_path: Path, relay: RelayProcess, *, keep_history: bool = False
) -> tuple[KeyStore, KeyStore]:
    """Alice's and Bob's stores, each holding the same room (Bob keeps its history or not)."""
    key = make_minikey(secrets.randbelow)
    alice = new_store(tmp_path / "alice.json", room(key, relay.url))
    bob = new_store(tmp_path / "bob.json", room(key, relay.url, keep_history=keep_history))
    return alice, bob


def test_two_members_chat_and_see_each_others_name_and_fingerprint(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, bob_store = two_stores(tmp_path, relay)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            assert "● connected" in alice.status()
            await alice.press(*"hello bob", "enter")  # typed, key by key
            # At once on the sender's screen, as its own message.
            (own,) = alice.lines_with("hello bob")
            assert "alice" in own
            assert "(you)" in own
            await bob.until(lambda: bool(bob.lines_with("hello bob")), "the message")
            (line,) = bob.lines_with("hello bob")
            assert "alice" in line
            assert alice_store.device.fingerprint in line
            assert line.lstrip().startswith("1 ")  # numbered, for /delete
            # A reply, from a sender who tries to draw on the screen: shown as plain text.
            await bob.say("hi [bold]alice[/bold]\x1b[2J")
            await alice.until(lambda: bool(alice.lines_with("hi [bold]")), "a reply")
            (reply,) = alice.lines_with("hi [bold]")
            assert "hi [bold]alice[/bold]\ufffd[2J" in reply
            assert bob_store.device.fingerprint in reply

    run(scenario())


def test_the_members_line_shows_who_is_online_with_their_fingerprints(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """Each chat announces itself (PROTOCOL.md 5.7): alice is named on bob's members line
    before she writes anything, and is gone from it once she quits."""
    alice_store, bob_store = two_stores(tmp_path, relay)
    alice_here = f"alice {alice_store.device.fingerprint}"

    async def scenario() -> None:
        async with on_screen(ChatApp(bob_store, "bob")) as bob:
            async with on_screen(ChatApp(alice_store, "alice")) as alice:
                await bob.until(lambda: alice_here in bob.members(), "alice's fingerprint")
                assert "Online: 2" in bob.members()
                assert f"you: bob {bob_store.device.fingerprint}" in bob.members()
                assert "not named" not in bob.members()  # both said who they are
                bob_here = f"bob {bob_store.device.fingerprint}"
                await alice.until(lambda: bob_here in alice.members(), "bob's fingerprint")
                assert not alice.conversation()  # nobody wrote a word
            await bob.until(lambda: "Online: 1" in bob.members(), "alice to quit")
            assert "alice" not in bob.members()

    run(scenario())


def test_a_known_name_with_a_new_device_key_is_warned_about(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, bob_store = two_stores(tmp_path, relay)
    # The same room and the same name, from another device key.
    impostor_store = new_store(tmp_path / "impostor.json", *alice_store.rooms)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            await alice.say("it is me")
            await bob.until(lambda: bool(bob.lines_with("it is me")), "alice's message")
            assert "NEW device key" not in bob.conversation()
            async with on_screen(ChatApp(impostor_store, "alice")) as impostor:
                await bob.until(lambda: "Online: 3" in bob.members(), "a third member")
                await impostor.say("it is me, honest")
                await bob.until(lambda: bool(bob.lines_with("honest")), "the message")
            (warning,) = bob.lines_with("NEW device key")
            assert "alice" in warning
            assert impostor_store.device.fingerprint in bob.conversation()
            assert "⚠ alice" in bob.members()

    run(scenario())


def test_a_look_alike_of_a_name_in_kept_history_is_warned_about(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """Names that look the same on screen are one name (PROTOCOL.md 4.4), those this chat
    knows from kept history too: the session core only knows the names it saw itself."""
    alice_store, bob_store = two_stores(tmp_path, relay, keep_history=True)
    kept = HistoryEntry("ab" * 16, 1, "alice", alice_store.device.fingerprint, "earlier")
    bob_store.rooms[0].history.append(kept)
    impostor_store = new_store(tmp_path / "impostor.json", *alice_store.rooms)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(bob_store, "bob")) as bob,
            on_screen(ChatApp(impostor_store, "Alice\u200b ")) as impostor,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            await impostor.say("it is me")
            await bob.until(lambda: bool(bob.lines_with("it is me")), "the message")
            assert len(bob.lines_with("NEW device key")) == 1
            shown = "".join(bob.conversation().split())  # the warning wraps
            assert f"(before:{alice_store.device.fingerprint})" in shown
            assert impostor_store.device.fingerprint in shown

    run(scenario())


def test_a_name_that_mixes_look_alike_scripts_is_warned_about_and_marked(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """ "\u0430lice" with a Cyrillic a is another name than "alice" (PROTOCOL.md 4.4), so no
    key-change warning: it is flagged as mixing scripts instead, once, and marked wherever
    it shows; a name in one script is not."""
    alice_store, bob_store = two_stores(tmp_path, relay)
    impostor_store = new_store(tmp_path / "impostor.json", *alice_store.rooms)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(bob_store, "bob")) as bob,
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(impostor_store, "\u0430lice")) as impostor,
        ):
            await bob.until(lambda: "Online: 3" in bob.members(), "all joined")
            await alice.say("the real one")
            await impostor.say("pay bob")
            await impostor.say("pay him now")
            await bob.until(lambda: bool(bob.lines_with("pay him now")), "the messages")
            flat = " ".join(bob.conversation().split())  # the warning wraps
            assert flat.count("mixes Latin and Cyrillic letters") == 1  # once per name
            assert impostor_store.device.fingerprint in flat
            assert "NEW device key" not in flat
            (real,) = bob.lines_with("the real one")
            assert "⚠" not in real
            assert all("\u0430lice ⚠" in line for line in bob.lines_with("pay "))
            assert "⚠ \u0430lice" in bob.members()
            assert "⚠ alice" not in bob.members()

    run(scenario())


def test_a_name_that_mixes_scripts_in_kept_history_is_warned_about_on_opening(
    tmp_path: Path,
) -> None:
    kept = HistoryEntry("ab" * 16, now_ms(), "\u0430lice", "QX3M-7KDA-PLNE-4RWB", "earlier")
    store = new_store(
        tmp_path / "bob.json",
        room(make_minikey(secrets.randbelow), NOWHERE, keep_history=True, history=[kept]),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "bob")) as bob:
            await bob.until(lambda: bool(bob.lines_with("earlier")), "the kept message")
            flat = " ".join(bob.conversation().split())
            assert flat.count("mixes Latin and Cyrillic letters") == 1
            assert flat.index("earlier") < flat.index("mixes Latin")  # after what it is about

    run(scenario())


def test_a_deleted_message_is_gone_from_the_screen_and_the_store(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, bob_store = two_stores(tmp_path, relay, keep_history=True)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            await alice.say("first, to delete")
            await alice.say("second, to keep")
            await alice.say("third, to delete")
            await bob.until(
                lambda: len(kept(bob_store.path)) == 3, "the three messages kept in the store"
            )
            assert bob.lines_with("first, to delete")
            # By the numbers as read: deleting one does not renumber the others, so the
            # second /delete hits the message it names, not the one after it.
            await bob.say("/delete 1")
            assert kept(bob_store.path) == ["second, to keep", "third, to delete"]  # at once
            await bob.say("/delete 3")
            assert kept(bob_store.path) == ["second, to keep"]
            assert "first, to delete" not in bob.conversation()
            assert "third, to delete" not in bob.conversation()
            (line,) = bob.lines_with("second, to keep")
            assert line.lstrip().startswith("2 ")  # the number it had
            await bob.say("/delete 1")
            assert "1 to 3" not in bob.conversation()
            assert "(2 here)" in bob.conversation()

    run(scenario())
    assert kept(bob_store.path) == ["second, to keep"]  # and it stays so after quitting


def test_a_deleted_message_a_relay_sends_again_after_a_restart_stays_deleted(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """The replay filter starts empty after a restart: the chat tells it the kept history
    and the deletions of the last hour, so a relay's replay brings nothing back."""
    key = make_minikey(secrets.randbelow)
    bob_store = new_store(tmp_path / "bob.json", room(key, relay.url, keep_history=True))
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def publish(ref: int, text: str) -> bytes:
        return text_publish(keys, alice, ref, text)

    def shown(member: Member, text: str) -> int:
        return len(member.lines_with(text))

    async def scenario() -> None:
        to_delete, to_keep = publish(1, "first, to delete"), publish(2, "second, to keep")
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(bob_store, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
                await raw.send(to_delete)
                await raw.send(to_keep)
                await bob.until(lambda: len(kept(bob_store.path)) == 2, "both kept")
                await bob.say("/delete 1")
                assert kept(bob_store.path) == ["second, to keep"]
            # Bob's chat starts again; the relay sends the very same envelopes again.
            again = KeyStore.open(bob_store.path, PASSWORD)
            async with on_screen(ChatApp(again, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "joined again")
                assert shown(bob, "second, to keep") == 1  # from the kept history
                await raw.send(to_delete)
                await raw.send(to_keep)
                await raw.send(publish(3, "third, new"))
                await bob.until(lambda: shown(bob, "third, new") == 1, "the new message")
                assert shown(bob, "first, to delete") == 0
                assert shown(bob, "second, to keep") == 1
                await bob.until(lambda: len(kept(bob_store.path)) == 2, "the new one kept")
                assert kept(bob_store.path) == ["second, to keep", "third, new"]

    run(scenario())


def test_a_room_without_history_shows_no_replay_of_its_last_hour_after_a_restart(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A room that keeps no history has nothing else to tell its replay filter after a
    restart: the store keeps the ids and times (never the text) of the messages received
    and sent in the last hour, and a relay that sends them again is not believed."""
    key = make_minikey(secrets.randbelow)
    path = tmp_path / "bob.json"
    bob_store = new_store(path, room(key, relay.url))
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def publish(ref: int, text: str) -> bytes:
        return text_publish(keys, alice, ref, text)

    async def scenario() -> None:
        from_alice = publish(1, "from alice, once")
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(bob_store, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
                await raw.send(from_alice)
                await bob.until(lambda: bool(bob.lines_with("from alice, once")), "alice's")
                await bob.say("from bob, once")
                while not isinstance(from_bob := await raw.recv(), frames.Deliver):
                    pass  # presence, the ACK of alice's
                await bob.until(lambda: "waiting to send" not in bob.status(), "bob's taken")
            assert b"from alice" not in path.read_bytes()
            (stored,) = KeyStore.open(path, PASSWORD).rooms
            assert (stored.history, len(stored.recent)) == ([], 2)  # ids only, at quitting
            again = KeyStore.open(path, PASSWORD)
            async with on_screen(ChatApp(again, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "joined again")
                await raw.send(from_alice)
                await raw.send(
                    frames.encode_frame(frames.Publish(2, keys.room_id, from_bob.envelope))
                )
                await raw.send(publish(3, "from alice, new"))
                await bob.until(lambda: bool(bob.lines_with("from alice, new")), "the new one")
                assert not bob.lines_with("from alice, once")
                assert not bob.lines_with("from bob, once")

    run(scenario())


def test_ids_of_messages_received_are_written_within_a_while_not_at_once(
    tmp_path: Path, relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A running chat writes the ids it has for the replay filter within
    IDS_SAVED_WITHIN, with no other change to write and without quitting."""
    monkeypatch.setattr(app_module, "IDS_SAVED_WITHIN", 1.0)
    alice_store, bob_store = two_stores(tmp_path, relay)

    def ids_kept() -> int:
        return len(KeyStore.open(bob_store.path, PASSWORD).rooms[0].recent)

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(bob_store, "bob")) as bob,
            on_screen(ChatApp(alice_store, "alice")) as alice,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            await alice.say("hello")
            await bob.until(lambda: bool(bob.lines_with("hello")), "the message")
            assert ids_kept() == 0  # not at once
            await bob.until(lambda: ids_kept() == 1, "the id written")
            assert bob.app.is_running

    run(scenario())


def test_two_chats_on_one_store_do_not_answer_each_other_s_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chat takes in what the other wrote; with nothing of its own to add, it writes
    nothing back (else they would rewrite the store each second, for ever)."""
    path = tmp_path / "store.json"
    new_store(path, room(make_minikey(secrets.randbelow), NOWHERE))
    write = keystore._write_atomically
    writes = 0

    def counted(target: Path, data: bytes) -> None:
        nonlocal writes
        writes += 1
        write(target, data)

    monkeypatch.setattr(keystore, "_write_atomically", counted)
    first = ChatApp(KeyStore.open(path, PASSWORD), "alice")
    second = ChatApp(KeyStore.open(path, PASSWORD), "alice")

    async def scenario() -> None:
        async with on_screen(first) as one, on_screen(second) as two:
            await one.say("/history on")
            await two.until(lambda: "history kept" in two.status(), "the other chat took it in")
            settled = writes
            await one.do(one.pilot.pause(3.0))  # three ticks of each
            assert writes == settled

    run(scenario())


def test_the_stored_floor_keeps_out_what_the_chat_no_longer_knows_it_had(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A store that dropped ids to keep the newest 10,000 keeps the newest time among
    them; the chat seeds it, and a relay's replay of one of those is not shown."""
    key = make_minikey(secrets.randbelow)
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def publish(ref: int, text: str, at: int) -> bytes:
        return text_publish(keys, alice, ref, text, at_ms=at)

    written = now_ms() - 60_000
    stored = room(key, relay.url)
    stored.recent_floor_ms = written  # its id was dropped for the bound
    bob_store = new_store(tmp_path / "bob.json", stored)

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(bob_store, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
                await raw.send(publish(1, "forgotten, sent again", written))
                await raw.send(publish(2, "new", now_ms()))
                await bob.until(lambda: bool(bob.lines_with("new")), "the new one")
                assert not bob.lines_with("forgotten")

    run(scenario())


def test_a_stored_floor_left_ahead_by_a_clock_set_back_is_forgotten_not_seeded(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A floor written while the clock ran a day ahead: seeded as the present, it would
    refuse a message stamped a minute ago. The chat prunes it first, as the store does
    on every write (PROTOCOL.md 7), and the message shows."""
    key = make_minikey(secrets.randbelow)
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    bob_store = new_store(tmp_path / "bob.json", room(key, relay.url))
    bob_store.rooms[0].recent_floor_ms = now_ms() + 24 * HOUR_MS  # as read from the file

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(bob_store, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
                late = now_ms() - 60_000
                await raw.send(text_publish(keys, alice, 1, "a minute late", at_ms=late))
                await raw.send(text_publish(keys, alice, 2, "on time", at_ms=now_ms()))
                await bob.until(lambda: bool(bob.lines_with("on time")), "the one on time")
                assert bob.lines_with("a minute late")

    run(scenario())


def test_an_expired_room_is_gone_from_the_screen_and_the_store(
    tmp_path: Path, relay: RelayProcess
) -> None:
    path = tmp_path / "store.json"
    soon = now_ms() + 2000
    store = new_store(
        path,
        room(make_minikey(secrets.randbelow), relay.url, "soon", expires_at_ms=soon),
        # No relay tells this one it expired (its server is no URL): the app's own clock does.
        room(make_minikey(secrets.randbelow), "no server", "unreachable", expires_at_ms=soon),
        room(make_minikey(secrets.randbelow), relay.url, "later"),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice", room="soon")) as member:
            assert member.sidebar() == ["soon", "unreachable", "later"]
            assert "soon on" in member.status()
            await member.until(lambda: member.sidebar() == ["later"], "the rooms to expire")
            assert [r.label for r in KeyStore.open(path, PASSWORD).rooms] == ["later"]
            await member.until(lambda: "later on" in member.status(), "the other room shown")

    run(scenario())


def test_a_clock_the_relay_says_is_a_day_fast_deletes_no_room_early(tmp_path: Path) -> None:
    """A room's key is deleted at its expiry, for good: by a clock a day ahead, every room
    went at once. The chat expires rooms by this clock read back by what the relay's says;
    a relay that says it is on time has them go as before."""

    async def gone_within(clock_off_by: float) -> bool:
        soon = now_ms() + 1_500  # over in 1.5 s, by this clock
        store = new_store(
            tmp_path / f"store{clock_off_by:g}.json",
            room(make_minikey(secrets.randbelow), NOWHERE, "soon", expires_at_ms=soon),
        )
        async with FakeRelay(serving, clock_off_by=clock_off_by) as relay:
            store.rooms[0].server = relay.url
            async with on_screen(ChatApp(store, "alice")) as member:
                await member.until(lambda: "connected" in member.status(), "connected")
                try:
                    await member.until(lambda: member.sidebar() == [], "the room to go")
                except AssertionError:
                    return False
                return True

    assert not run(gone_within(-24 * 3600))
    assert run(gone_within(0))


def test_key_and_qr_show_the_key_and_a_code_that_scans_to_the_invite(tmp_path: Path) -> None:
    key = make_minikey(secrets.randbelow)
    store = new_store(tmp_path / "store.json", room(key, NOWHERE))
    invite = format_invite(NOWHERE, key)

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            assert "connecting" in member.status()
            await member.say("/key")
            await member.until(lambda: invite in member.conversation(), "the key")
            assert format_minikey(key) in member.conversation()
            assert "capital S (sierra)" in member.conversation()
            await member.say("/qr")
            await member.until(lambda: "▀" in member.conversation(), "the QR code")
            drawing = member.conversation().split("scan it with a phone camera")[1]
            assert decode(rasterise_terminal(drawing)) == [invite]

    run(scenario())


def test_history_shows_again_and_clear_leave_and_wipe_delete_it(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    first, second = make_minikey(secrets.randbelow), make_minikey(secrets.randbelow)
    history = [
        HistoryEntry("00" * 16, now_ms() - 60_000, "bob", "AAAA-BBBB-CCCC-DDDD", "kept once"),
        HistoryEntry("11" * 16, now_ms() - 30_000, "bob", "AAAA-BBBB-CCCC-DDDD", "kept twice"),
    ]
    store = new_store(
        path,
        room(first, NOWHERE, "one", keep_history=True, history=history),
        room(second, NOWHERE, "two"),
    )
    app = ChatApp(store, "alice")

    def stored() -> KeyStore:
        return KeyStore.open(path, PASSWORD)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await member.until(lambda: "kept twice" in member.conversation(), "the history")
            assert "kept once" in member.conversation()
            await member.say("/clear")
            assert "kept" not in member.conversation()
            assert stored().rooms[0].history == []
            # Their ids and times stay for the replay window, so no relay brings them back.
            assert {e.message_id for e in stored().rooms[0].deleted} == {"00" * 16, "11" * 16}
            await member.say("/history off")
            assert not stored().rooms[0].keep_history
            await member.say("/leave")
            assert "Type /leave again" in member.conversation()
            assert len(stored().rooms) == 2  # asked, not done yet
            await member.say("/help")  # anything else between: asked again
            await member.say("/leave")
            assert len(stored().rooms) == 2
            await member.say("/leave")
            assert [r.label for r in stored().rooms] == ["two"]
            await member.until(lambda: member.sidebar() == ["two"], "the sidebar without it")
            await member.say("/wipe")
            assert "Type /wipe again" in member.conversation()
            assert len(stored().rooms) == 1  # asked, not done yet
            await member.say("/wipe")
            assert stored().rooms == []

    run(scenario())
    assert app.return_code == 0


def in_a_terminal(args: list[bytes] | list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``args`` with a terminal for its input and its screen (standard error), as the
    chat needs, to its end: its exit status, and what it wrote there."""
    controller, terminal = pty.openpty()
    try:
        try:
            result = subprocess.run(
                args, stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, env=env,
                timeout=60, check=False,
            )  # fmt: skip
        finally:
            os.close(terminal)
        said = bytearray()
        drain(controller, said)  # what it wrote, until the terminal is gone
    finally:
        os.close(controller)
    return result.returncode, said.decode(errors="replace")


def test_the_chat_command_opens_the_store_and_names_a_missing_room(tmp_path: Path) -> None:
    args = build_parser().parse_args(["chat", "team", "--name", "carol", "--keystore", "s"])
    assert (args.run, args.room, args.name, args.keystore) == (cmd_chat, "team", "carol", "s")
    path = tmp_path / "store.json"
    new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, "team"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
    status, said = in_a_terminal([sys.executable, "-m", "instantroom", "chat", "nosuch"], environ)
    assert status == 2
    assert "No stored room is labelled 'nosuch'" in said


CHAT_THAT = """
import sys
sys.stdin.isatty = sys.stderr.isatty = lambda: True  # as in a terminal (it runs headless)
from instantroom.cli import main
from instantroom.tui.app import ChatApp
mounted = ChatApp.on_mount
async def on_mount(self):
    await mounted(self)
    if sys.argv[1] == "crashes":
        raise RuntimeError("a bug in the chat")
    self.exit()
ChatApp.on_mount = on_mount
running = ChatApp.run
ChatApp.run = lambda self, **options: running(self, headless=True)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(("how", "status"), [("crashes", 1), ("quits", 0)])
def test_a_chat_that_crashes_exits_non_zero(tmp_path: Path, how: str, status: int) -> None:
    path = tmp_path / "store.json"
    new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, "team"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
    result = subprocess.run(
        [sys.executable, "-c", CHAT_THAT, how, "chat"],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == status, result.stderr
    assert ("a bug in the chat" in result.stdout + result.stderr) == (how == "crashes")


def test_a_relay_that_refuses_the_client_for_good_says_so_in_the_status(tmp_path: Path) -> None:
    """A message larger than the relay's frame limit: it closes with 1009, which the client
    must not retry; the status line says why instead of "reconnecting" forever."""
    with running_relay("--max-frame-size", "4096") as relay:
        store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), relay.url))

        async def scenario() -> None:
            async with on_screen(ChatApp(store, "alice", room="team")) as member:
                await member.until(lambda: "connected" in member.status(), "the connection")
                await member.say("x" * 10_000)
                await member.until(lambda: "✗" in member.status(), "the refusal in the status")
                assert "reconnecting" not in member.status()

        run(scenario())


def test_a_relay_that_closes_for_good_while_nothing_waits_shows_why(tmp_path: Path) -> None:
    """A relay lets the app in, then closes with 1008: the client stops for good and its
    events end with the failure; the app does not crash but says why in the status."""
    script = joined_then_closed(CloseCode.POLICY_VIOLATION, after=0.3)

    async def scenario() -> None:
        async with FakeRelay(script) as relay:
            key = make_minikey(secrets.randbelow)
            store = new_store(tmp_path / "store.json", room(key, relay.url))
            async with on_screen(ChatApp(store, "alice", room="team")) as member:
                await member.until(lambda: "✗" in member.status(), "the refusal in the status")
                assert "1008" in member.status()
                assert "reconnecting" not in member.status()
                assert member.app.is_running
            assert len(relay.peers) == 1

    run(scenario())


def test_rooms_another_program_added_or_forgot_show_up_or_go_when_the_chat_saves(
    tmp_path: Path, relay: RelayProcess
) -> None:
    path = tmp_path / "store.json"
    one, two, three = (make_minikey(secrets.randbelow) for _ in range(3))
    store = new_store(path, room(one, relay.url, "one"), room(two, relay.url, "two"))
    bob_store = new_store(tmp_path / "bob.json", room(two, relay.url, "two"))

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(store, "alice", room="one")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "alice in room two")
            assert alice.sidebar() == ["one", "two"]
            # Another program (a `join` and a `leave` in another terminal) writes the store.
            other = KeyStore.open(path, PASSWORD)
            other.forget(other.find("two"))
            other.add_room(room(three, relay.url, "three"))
            other.save()
            await alice.say("/history on")  # a change of the chat's own, saved at once
            await alice.until(lambda: alice.sidebar() == ["one", "three"], "the sidebar")
            assert any("'two' was forgotten by another InstantRoom" in n for n in alice.notes())
            stored = KeyStore.open(path, PASSWORD)
            assert [(r.label, r.keep_history) for r in stored.rooms] == [
                ("one", True),
                ("three", False),
            ]
            await bob.until(lambda: "Online: 1" in bob.members(), "alice to leave room two")
            await alice.press("ctrl+down")
            await alice.until(lambda: "three on" in alice.status(), "room three shown")
            await alice.until(lambda: "Online: 1" in alice.members(), "room three joined")

    run(scenario())
    assert [r.label for r in KeyStore.open(path, PASSWORD).rooms] == ["one", "three"]


def test_an_idle_chat_follows_the_store_too(tmp_path: Path) -> None:
    """No change of its own to save: the chat still notices, within a tick, a room
    another program added or forgot."""
    path = tmp_path / "store.json"
    one, two, three = (make_minikey(secrets.randbelow) for _ in range(3))
    store = new_store(path, room(one, NOWHERE, "one"), room(two, NOWHERE, "two"))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice", room="one")) as alice:
            assert alice.sidebar() == ["one", "two"]
            other = KeyStore.open(path, PASSWORD)
            other.forget(other.find("two"))
            other.add_room(room(three, NOWHERE, "three"))
            other.save()
            await alice.until(lambda: alice.sidebar() == ["one", "three"], "the sidebar")

    run(scenario())
    assert [r.label for r in KeyStore.open(path, PASSWORD).rooms] == ["one", "three"]


def test_a_password_changed_elsewhere_stops_the_saving_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    one, two = make_minikey(secrets.randbelow), make_minikey(secrets.randbelow)
    store = new_store(path, room(one, NOWHERE, "one"))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as member:

            def stopped() -> list[str]:
                return [n for n in member.notes() if "saves nothing more" in n]

            other = KeyStore.open(path, PASSWORD)
            other.add_room(room(two, NOWHERE, "two"))
            other.change_password("another password")
            await member.say("/history on")
            await member.until(lambda: bool(stopped()), "the note")
            (note,) = stopped()
            assert "changed the key store's password" in note
            await member.say("/history off")  # not tried again, nor said again
            await member.say("/key")  # and the chat still works
            await member.until(lambda: format_minikey(one) in member.conversation(), "the key")
            assert len(stopped()) == 1
            assert app.is_running
            await member.say("/wipe")
            await member.say("/wipe")  # cannot be done: said, and the chat stays
            await member.until(lambda: "Nothing was wiped" in member.conversation(), "why")
            assert app.is_running
            assert app.unsaved is not None
            assert "changed the key store's password" in app.unsaved

    run(scenario())  # and no crash
    with pytest.raises(WrongPassword):
        KeyStore.open(path, PASSWORD)
    reopened = KeyStore.open(path, "another password")
    assert [(r.label, r.keep_history) for r in reopened.rooms] == [("one", False), ("two", False)]
    assert reopened.device.fingerprint == store.device.fingerprint


def test_the_new_password_given_by_slash_password_lets_the_chat_save_again(
    tmp_path: Path,
) -> None:
    """Another program changed the store's password: /password asks for the new one (a
    wrong one is said, and asked again), and the chat then writes what it changed
    meanwhile, merged with what the other wrote. The password is never a message."""
    path = tmp_path / "store.json"
    one, two = make_minikey(secrets.randbelow), make_minikey(secrets.randbelow)
    store = new_store(path, room(one, NOWHERE, "one"))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as member:
            await member.say("/password")  # nothing changed yet: nothing to ask
            await member.until(lambda: "as this chat opened it" in member.conversation(), "no need")
            assert not isinstance(app.screen, PasswordScreen)
            other = KeyStore.open(path, PASSWORD)
            other.add_room(room(two, NOWHERE, "two"))
            other.change_password("another password")
            await member.say("/history on")
            await member.until(
                lambda: any("type /password" in note for note in member.notes()), "the note"
            )

            async def typed(password: str) -> None:
                field = app.screen.query_one("#password-input", Input)
                field.value = password
                await member.pilot.press("enter")

            await member.say("/password")
            await member.until(lambda: isinstance(app.screen, PasswordScreen), "the question")
            await member.do(typed("not it"))
            await member.until(
                lambda: (
                    "not the key store's password"
                    in str(app.screen.query_one("#password-problem", Static).content)
                ),
                "wrong password said",
            )
            assert isinstance(app.screen, PasswordScreen)
            await member.do(typed("another password"))
            await member.until(lambda: not isinstance(app.screen, PasswordScreen), "taken")
            await member.until(lambda: app.unsaved is None, "saved")
            assert any("saves again" in note for note in member.notes())
            assert "another password" not in member.conversation()
            assert "not it" not in member.conversation()
            await member.until(lambda: sorted(member.sidebar()) == ["one", "two"], "merged")

    run(scenario())
    reopened = KeyStore.open(path, "another password")
    assert sorted((r.label, r.keep_history) for r in reopened.rooms) == [
        ("one", True),  # what the chat changed meanwhile
        ("two", False),  # what the other program added
    ]


def test_escape_leaves_the_chat_saving_nothing_as_before(tmp_path: Path) -> None:
    path = tmp_path / "store.json"
    store = new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, "one"))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as member:
            KeyStore.open(path, PASSWORD).change_password("another password")
            await member.say("/history on")
            await member.until(lambda: app.unsaved is not None, "stopped")
            await member.say("/password")
            await member.until(lambda: isinstance(app.screen, PasswordScreen), "the question")
            await member.press("escape")
            await member.until(lambda: not isinstance(app.screen, PasswordScreen), "gone")
            await member.say("/history off")
            await member.until(
                lambda: "changed the key store's password" in (app.unsaved or ""), "still"
            )
            assert app.is_running

    run(scenario())
    assert [r.keep_history for r in KeyStore.open(path, "another password").rooms] == [False]


def test_a_store_that_cannot_be_written_is_said_once_and_written_by_a_later_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.json"
    store = new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, "one"))
    app = ChatApp(store, "alice")
    monkeypatch.setattr(app, "NOTIFICATION_TIMEOUT", 600.0)  # notes stay for the count
    write = keystore._write_atomically
    failures = 2  # the command's own write, then the next tick's

    def full_disk(path: Path, data: bytes) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data)

    monkeypatch.setattr(keystore, "_write_atomically", full_disk)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await member.say("/history on")
            await member.until(
                lambda: KeyStore.open(path, PASSWORD).rooms[0].keep_history, "a later write"
            )
            assert failures == 0
            notes = [n for n in member.notes() if "could not be written" in n]
            assert notes == [
                "The key store could not be written (No space left on device). "
                "Trying again each second."
            ]
            assert app.is_running

    run(scenario())  # and no crash


def test_what_comes_after_the_screen_is_taken_down_changes_only_the_state(
    tmp_path: Path,
) -> None:
    """A tick, a redraw or a relay's event can still come as the chat quits, once its
    widgets are gone: it must not crash the chat then (it did, in a test run)."""
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app):
            pass

    run(scenario())
    (view,) = app._views.values()
    app._refresh_panels()
    app._show_conversation()
    app._note(None, "to no screen")
    app._add_line(view, Line("notice", "kept in the view"))
    assert view.lines[-1].text == "kept in the view"


def test_a_crash_report_shows_neither_keys_nor_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_minikey(secrets.randbelow)
    store = new_store(tmp_path / "store.json", room(key, NOWHERE, "one"))
    device_key = private_key_bytes(store.device.private_key).hex()
    app = ChatApp(store, "alice")
    report = io.StringIO()

    def broken(path: Path, data: bytes) -> None:
        raise RuntimeError("the disk driver broke")

    async def scenario() -> None:
        async with on_screen(app) as member:
            monkeypatch.setattr(keystore, "_write_atomically", broken)
            await member.say("/history on")
            deadline = time.monotonic() + 10.0
            while not app._exit_renderables:  # the app is down: no pilot to wait with
                assert time.monotonic() < deadline, "timed out waiting for the crash"
                await asyncio.sleep(0.05)
            console = Console(file=report, width=120, color_system=None)
            for renderable in app._exit_renderables:
                console.print(renderable)

    with pytest.raises(RuntimeError, match="the disk driver broke"):
        run(scenario())
    text = report.getvalue()
    assert "RuntimeError: the disk driver broke" in text  # the report is there...
    # ...with no secret in it, not even wrapped over lines or cut short at a panel's edge.
    flat = "".join(char for char in text if not char.isspace() and char not in "│╭╮╰╯─")
    assert PASSWORD not in text
    assert PASSWORD.replace(" ", "") not in flat
    for secret in (key, device_key):
        for start in range(len(secret) - 15):
            assert secret[start : start + 16] not in flat, "16 characters of a key in a row"


async def next_text(messages: AsyncIterator[MessageReceived]) -> MessageReceived:
    """The next text message: the chat's announcements (PROTOCOL.md 5.7) are messages too."""
    async for received in messages:
        if received.message.kind == Kind.TEXT:
            return received
    raise AssertionError("no more messages")


@pytest.mark.parametrize("keep_history", [False, True], ids=["no history", "history kept"])
def test_a_message_the_relay_had_not_taken_goes_with_the_next_chat_exactly_once(
    tmp_path: Path, keep_history: bool
) -> None:
    """Quit with a message the relay has not taken: it stays in the store, sealed, shows
    as waiting in the next chat, and goes, once, when the relay is back (PROTOCOL.md
    10.6), whether the room keeps history or not."""
    with running_relay() as probe:
        port = probe.port  # a port the relay comes back on later; nothing listens meanwhile
    url = f"http://127.0.0.1:{port}/"
    key = make_minikey(secrets.randbelow)
    path = tmp_path / "alice.json"
    app = ChatApp(new_store(path, room(key, url, keep_history=keep_history)), "alice")

    def waiting_line(member: Member) -> bool:
        return any("(waiting to send)" in line for line in member.lines_with("written offline"))

    async def offline() -> None:
        async with on_screen(app) as alice:
            await alice.say("written offline")
            await alice.until(lambda: waiting_line(alice), "the message, waiting")
            assert "1 waiting to send" in alice.status()
            await alice.press("ctrl+q")  # kept: no question
            await alice.until(lambda: not app.is_running, "the chat to quit")

    run(offline())
    (stored,) = KeyStore.open(path, PASSWORD).rooms
    assert len(stored.outbox) == 1
    assert [entry.sent for entry in stored.history] == ([False] if keep_history else [])

    app = ChatApp(KeyStore.open(path, PASSWORD), "alice")

    async def still_offline() -> None:
        async with on_screen(app) as alice:
            await alice.until(lambda: waiting_line(alice), "the kept message, waiting")
            assert len(alice.lines_with("written offline")) == 1
            assert "1 waiting to send" in alice.status()
            await alice.press("ctrl+q")
            await alice.until(lambda: not app.is_running, "the chat to quit")

    run(still_offline())
    assert len(KeyStore.open(path, PASSWORD).rooms[0].outbox) == 1

    async def online(relay: RelayProcess) -> None:
        keys = RoomKeys.from_minikey(key)
        bob = RoomClient(relay.url, DeviceKey.from_private_bytes(secrets.token_bytes(32)), "bob")
        async with bob:
            await bob.join(keys)
            messages = bob.messages()
            app = ChatApp(KeyStore.open(path, PASSWORD), "alice")
            async with on_screen(app) as alice:
                received = await asyncio.wait_for(next_text(messages), 10)
                assert (received.message.sender_name, received.message.text) == (
                    "alice",
                    "written offline",
                )
                await alice.until(lambda: not waiting_line(alice), "the message taken")
                (line,) = alice.lines_with("written offline")
                assert "not sent" not in line
                assert "waiting to send" not in alice.status()
                await alice.until(
                    lambda: not KeyStore.open(path, PASSWORD).rooms[0].outbox, "it left the store"
                )
                await alice.say("written online")
                received = await asyncio.wait_for(next_text(messages), 10)
                assert received.message.text == "written online"  # the first came once

    with running_relay(port=port) as relay:
        run(online(relay))
    (stored,) = KeyStore.open(path, PASSWORD).rooms
    assert stored.outbox == []
    if keep_history:
        assert [(e.text, e.sent) for e in stored.history] == [
            ("written offline", True),
            ("written online", True),
        ]


@pytest.mark.parametrize("keep_history", [False, True], ids=["no history", "history kept"])
def test_a_message_too_old_to_send_when_the_chat_starts_shows_as_not_sent(
    tmp_path: Path, keep_history: bool
) -> None:
    """One kept waiting for longer than the 55 minutes a message may wait (the chat was
    closed meanwhile) is given up as the chat starts, shown as not sent, and forgotten."""
    key = make_minikey(secrets.randbelow)
    path = tmp_path / "alice.json"
    store = new_store(path, room(key, NOWHERE, keep_history=keep_history))
    stored = store.rooms[0]
    written = now_ms() - 56 * 60 * 1000
    message = new_message(
        store.device, "alice", Kind.TEXT, b"too late", token_bytes=secrets.token_bytes,
        now_ms=written,
    )  # fmt: skip
    envelope = seal_envelope(stored_keys := RoomKeys.from_minikey(key), store.device, message,
                             secrets.token_bytes(12))  # fmt: skip
    assert stored_keys.room_id == stored.room_id
    stored.add_outgoing(message.message_id, written, envelope)
    if keep_history:
        fingerprint = store.device.fingerprint
        stored.history.append(
            HistoryEntry(message.message_id.hex(), written, "alice", fingerprint, "too late", False)
        )
    store.save()
    app = ChatApp(KeyStore.open(path, PASSWORD), "alice")

    async def scenario() -> None:
        async with on_screen(app) as alice:
            await alice.until(
                lambda: any("(not sent: " in line for line in alice.lines_with("too late")),
                "the message, not sent",
            )
            assert "55 minutes" in alice.conversation()
            assert "waiting to send" not in alice.status()
            await alice.until(lambda: not KeyStore.open(path, PASSWORD).rooms[0].outbox, "saved")

    run(scenario())
    app = ChatApp(KeyStore.open(path, PASSWORD), "alice")

    async def again() -> None:
        async with on_screen(app) as alice:
            await alice.do(alice.pilot.pause(0.3))
            shown = alice.lines_with("too late")
            if keep_history:  # kept as never taken
                assert len(shown) == 1
                assert "(not sent: the relay never" in shown[0]  # the line wraps there
            else:
                assert shown == []

    run(again())


def store_with_one_waiting(path: Path, key: str, server: str) -> None:
    """A key store with one room, and in it one message of alice's, "written before", that
    the relay has not taken."""
    store = new_store(path, room(key, server))
    message = new_message(
        store.device, "alice", Kind.TEXT, b"written before",
        token_bytes=secrets.token_bytes, now_ms=now_ms(),
    )  # fmt: skip
    envelope = seal_envelope(RoomKeys.from_minikey(key), store.device, message,
                             secrets.token_bytes(12))  # fmt: skip
    store.rooms[0].add_outgoing(message.message_id, message.timestamp_ms, envelope)
    store.save()


def test_a_message_waiting_for_a_room_the_relay_refuses_for_good_shows_as_not_sent(
    tmp_path: Path,
) -> None:
    """The relay refuses the room (its lifetime is past what the relay keeps): what
    waited for it will not go, and says so, rather than waiting on screen and in the
    store for ever."""
    key = make_minikey(secrets.randbelow)
    path = tmp_path / "alice.json"

    async def too_long(peer: Peer) -> None:
        join = await peer.recv()
        assert isinstance(join, frames.Join)
        reason = "This relay keeps rooms for less time."
        await peer.send(frames.Error(ErrorCode.EXPIRY_TOO_FAR, 0, join.room_id, reason))
        await peer.ws.wait_closed()

    async def scenario() -> None:
        async with FakeRelay(too_long) as relay:
            store_with_one_waiting(path, key, relay.url)
            app = ChatApp(KeyStore.open(path, PASSWORD), "alice")
            async with on_screen(app) as alice:
                await alice.until(
                    lambda: any("(not sent: " in line for line in alice.lines_with("written")),
                    "the message, not sent",
                )
                assert "refused the room" in " ".join(alice.conversation().split())
                assert "waiting to send" not in alice.status()
                await alice.until(
                    lambda: not KeyStore.open(path, PASSWORD).rooms[0].outbox, "saved"
                )
                # Connected to the relay, which refused the room: the status line says so,
                # and a message written now says why it cannot go.
                assert "✗ the relay refused this room: This relay keeps rooms" in alice.status()
                await alice.say("written after")
                flat = " ".join(alice.conversation().split())
                assert "written after (not sent: the relay refused this room: This relay" in flat
                assert "Join the room" not in flat
                assert "waiting to send" not in alice.status()
                assert not KeyStore.open(path, PASSWORD).rooms[0].outbox

    run(scenario())


def test_a_message_waiting_for_a_room_full_for_now_keeps_waiting(tmp_path: Path) -> None:
    """A full room has a place again once someone leaves (PROTOCOL.md 10.6): what waits
    for it keeps waiting, on screen and in the store, and the chat says why once."""
    key = make_minikey(secrets.randbelow)
    path = tmp_path / "alice.json"

    async def full(peer: Peer) -> None:
        join = await peer.recv()
        assert isinstance(join, frames.Join)
        await peer.send(frames.Error(ErrorCode.ROOM_FULL, 0, join.room_id, "This room is full."))
        await peer.ws.wait_closed()

    async def scenario() -> None:
        async with FakeRelay(full) as relay:
            store_with_one_waiting(path, key, relay.url)
            app = ChatApp(KeyStore.open(path, PASSWORD), "alice")
            async with on_screen(app) as alice:
                await alice.until(
                    lambda: "No place for us now" in " ".join(alice.conversation().split()),
                    "the refusal, said",
                )
                assert "This room is full. Trying again." in " ".join(alice.conversation().split())
                assert not any("(not sent: " in line for line in alice.lines_with("written"))
                assert "waiting to send" in alice.status()
                # Connected to the relay, not in the room: the status line says so.
                assert "no place in the room for now" in alice.status()
                assert "connected" not in alice.status()
                assert KeyStore.open(path, PASSWORD).rooms[0].outbox  # kept for the retry

    run(scenario())


def test_quitting_asks_twice_when_messages_not_sent_cannot_be_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as alice:
            await alice.press("ctrl+q")  # nothing waits: no question
            await alice.until(lambda: not app.is_running, "the chat to quit")

    run(scenario())

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(keystore, "_write_atomically", full_disk)
    app = ChatApp(KeyStore.open(tmp_path / "store.json", PASSWORD), "alice")

    async def unsent() -> None:
        async with on_screen(app) as alice:
            await alice.say("into the void")  # no relay answers, and no disk keeps it
            await alice.press("ctrl+q")
            await alice.until(lambda: any("not sent yet" in n for n in alice.notes()), "why")
            assert app.is_running
            await alice.press("ctrl+q")
            await alice.until(lambda: not app.is_running, "the chat to quit")

    run(unsent())


def test_a_chat_whose_terminal_closes_writes_what_it_had_not_saved_yet(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """SIGHUP (the terminal closed) quits the chat as Ctrl+Q does, with 129: the ids of
    what it received lately, which it writes only within a while, are written first, so
    that a relay cannot show them again after a restart. Its default would end the
    process on the spot."""
    key = make_minikey(secrets.randbelow)
    keys = RoomKeys.from_minikey(key)
    path = tmp_path / "store.json"
    new_store(path, room(key, relay.url))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    env |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
    chat = subprocess.Popen(
        [sys.executable, "-m", "instantroom", "chat", "--name", "alice"],
        stdin=terminal, stdout=terminal, stderr=terminal,
        env=env | {"TERM": "xterm-256color"}, start_new_session=True,
        preexec_fn=signals_at_default,  # SIGHUP not ignored, whatever the runner's is
    )  # fmt: skip
    os.close(terminal)
    screen = bytearray()
    drained = threading.Thread(target=drain, args=(controller, screen), daemon=True)
    drained.start()

    async def scenario() -> bytes:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "bob") as bob:
            await bob.join(keys)
            async with asyncio.timeout(20):  # the chat is in when the room counts two
                while await bob.next_event() != PresenceChanged(keys.room_id, 2):
                    pass
            message = await bob.send_text(keys.room_id, "before the hangup")
        return message.message_id

    try:
        message_id = run(scenario())
        deadline = time.monotonic() + 10.0
        while b"before the hangup" not in screen:
            assert time.monotonic() < deadline, "timed out waiting for the message to show"
            time.sleep(0.05)
        chat.send_signal(signal.SIGHUP)
        assert chat.wait(timeout=20) == 128 + signal.SIGHUP
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
        drained.join(timeout=5)
        os.close(controller)
    assert message_id in dict(KeyStore.open(path, PASSWORD).rooms[0].known())


def drain(controller: int, screen: bytearray) -> None:
    """Keep what the chat draws in ``screen``, until its terminal is gone: a terminal
    nobody reads fills up, and stops the chat."""
    with contextlib.suppress(OSError):  # EIO: nothing has the terminal open any more
        while chunk := os.read(controller, 65536):
            screen += chunk


def test_a_pasted_text_goes_whole_with_its_line_breaks(tmp_path: Path, relay: RelayProcess) -> None:
    """Textual's input line keeps only the first line of a paste: a pasted paragraph went
    out as its first line, the rest dropped without a word. The chat's keeps it whole,
    shows its breaks as ⏎ on one line, and sends it as it was pasted."""
    alice_store, bob_store = two_stores(tmp_path, relay)
    pasted = "first line\r\nsecond line\rthird line\n"  # as terminals paste, or copy lines

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            field = alice.app.query_one("#input", Input)
            assert alice.app.focused is field
            alice.app.post_message(events.Paste(pasted))
            await alice.until(lambda: bool(field.value), "the paste")
            assert field.value == "first line\nsecond line\nthird line"
            shown = field.render_line(0).text
            assert "first line⏎second line⏎third line" in shown
            # The cursor is where a key typed goes: at the end, after three breaks.
            await alice.press("left", "backspace")
            assert field.value == "first line\nsecond line\nthird lie"
            await alice.press("enter")
            await bob.until(lambda: bool(bob.lines_with("third lie")), "the message")
            (first,) = bob.lines_with("first line")
            assert "alice" in first
            assert [line.strip() for line in bob.conversation().splitlines()[1:3]] == [
                "second line",
                "third lie",
            ]

    run(scenario())


def long_history(count: int) -> list[HistoryEntry]:
    words = " ".join(f"word{n}" for n in range(60))
    return [
        HistoryEntry(f"{n:032x}", now_ms() - 60_000 + n, "bob", "AAAA-BBBB-CCCC-DDDD", words)
        for n in range(count)
    ]


def test_the_conversation_is_drawn_again_for_a_new_width(tmp_path: Path) -> None:
    """Lines drawn for a wide terminal were cut at the edge of a narrower one (a pane
    split, a window made smaller): they are drawn again for the new width."""
    store = new_store(
        tmp_path / "store.json",
        room(make_minikey(secrets.randbelow), NOWHERE, keep_history=True, history=long_history(3)),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            log = member.app.query_one("#conversation", RichLog)

            def fits() -> bool:
                width = log.scrollable_content_region.width
                return bool(log.lines) and all(line.cell_length <= width for line in log.lines)

            await member.until(lambda: "word59" in member.conversation(), "the history")
            assert fits()
            await member.do(member.pilot.resize_terminal(70, 30))
            await member.until(fits, "the lines drawn for 70 columns")
            words = member.conversation().split()
            assert all(words.count(f"word{n}") == 3 for n in range(60))  # nothing cut

    run(scenario())


def test_a_narrow_or_short_terminal_keeps_the_conversation_and_the_input_line(
    tmp_path: Path,
) -> None:
    """The rooms' list took 30 columns of any terminal, and the input line went below the
    edge of a short one: too narrow, the list goes (Ctrl+Down still changes rooms), and
    the input line stays in view however short."""
    store = new_store(
        tmp_path / "store.json",
        room(make_minikey(secrets.randbelow), NOWHERE, "one"),
        room(make_minikey(secrets.randbelow), NOWHERE, "two"),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            rooms = member.app.query_one("#rooms")
            field = member.app.query_one("#input", Input)
            log = member.app.query_one("#conversation", RichLog)
            assert rooms.region.width == 30
            await member.do(member.pilot.resize_terminal(50, 6))
            await member.until(lambda: rooms.region.width == 0, "the rooms hidden")
            assert log.region.width == 50
            assert field.region.height == 3
            assert field.region.bottom == 6  # on screen, at the bottom
            await member.press("ctrl+down")
            await member.until(lambda: "two on" in member.status(), "the other room")
            await member.press("alt+up")  # where the terminal keeps Ctrl+arrows
            await member.until(lambda: "one on" in member.status(), "the first room")
            await member.do(member.pilot.resize_terminal(80, 24))
            await member.until(lambda: rooms.region.width > 0, "the rooms back")
            assert log.region.width >= 55  # the list takes a quarter at most

    run(scenario())


def test_page_keys_scroll_the_conversation_while_the_input_line_has_the_focus(
    tmp_path: Path,
) -> None:
    store = new_store(
        tmp_path / "store.json",
        room(make_minikey(secrets.randbelow), NOWHERE, keep_history=True, history=long_history(40)),
    )

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            log = member.app.query_one("#conversation", RichLog)
            await member.until(lambda: log.max_scroll_y > 0 and log.is_vertical_scroll_end, "end")
            assert member.app.focused is member.app.query_one("#input", Input)
            await member.press("pageup")
            await member.until(lambda: not log.is_vertical_scroll_end, "scrolled up")
            await member.press("pagedown")
            await member.until(lambda: log.is_vertical_scroll_end, "scrolled down again")

    run(scenario())


def test_reading_back_stays_put_when_a_message_comes_and_following_resumes_at_the_end(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A message arriving, or an ACK redrawing the lines, jumped to the end while one was
    reading back. Scrolled up, the view stays; back at the end, it follows again."""
    key = make_minikey(secrets.randbelow)
    alice_store = new_store(
        tmp_path / "alice.json",
        room(key, relay.url, keep_history=True, history=long_history(40)),
    )
    bob_store = new_store(tmp_path / "bob.json", room(key, relay.url))

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice")) as alice,
            on_screen(ChatApp(bob_store, "bob")) as bob,
        ):
            await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
            log = alice.app.query_one("#conversation", RichLog)
            await alice.until(lambda: log.max_scroll_y > 0 and log.is_vertical_scroll_end, "end")
            await alice.press("pageup", "pageup")
            await alice.until(lambda: not log.is_vertical_scroll_end, "scrolled up")
            await alice.do(alice.pilot.pause(0.3))  # the scroll settled
            where = log.scroll_y
            await bob.say("while alice reads back")
            await alice.until(lambda: bool(alice.lines_with("while alice reads")), "it")

            async def redraw() -> None:
                alice.app._redraw_soon()  # as an ACK of hers does

            await alice.do(redraw())
            await alice.do(alice.pilot.pause(0.5))  # the redraw, and any scroll it asked for
            assert log.scroll_y == where
            assert not log.is_vertical_scroll_end
            # Back at the end, new lines are followed again.
            while not log.is_vertical_scroll_end:
                await alice.press("pagedown")
            await bob.say("once she is back")
            await alice.until(lambda: bool(alice.lines_with("once she is back")), "it")
            await alice.until(lambda: log.is_vertical_scroll_end, "the view at the new end")
            # One's own message brings the view to the end, as a reply is read there.
            await alice.press("pageup")
            await alice.until(lambda: not log.is_vertical_scroll_end, "scrolled up")
            await alice.say("her own")
            await alice.until(lambda: "waiting" not in alice.conversation(), "the ACK")
            await alice.until(lambda: log.is_vertical_scroll_end, "the view at the end")

    run(scenario())


def test_a_clock_far_from_the_relays_is_said_once_in_each_room(tmp_path: Path) -> None:
    """Messages from a computer 10 minutes fast are dropped by every other member as dated
    in the future (PROTOCOL.md 7); the chat said nothing."""
    store = new_store(
        tmp_path / "store.json",
        room(make_minikey(secrets.randbelow), NOWHERE, "one"),
        room(make_minikey(secrets.randbelow), NOWHERE, "two"),
    )

    async def scenario() -> None:
        async with FakeRelay(serving, clock_off_by=-600) as behind:
            for stored in store.rooms:
                stored.server = behind.url
            async with on_screen(ChatApp(store, "alice")) as member:
                await member.until(lambda: "connected" in member.status(), "the first room")
                warning = "This computer's clock is 10 minutes fast"
                await member.until(lambda: warning in member.conversation(), "the warning")
                await member.press("ctrl+down")
                await member.until(lambda: warning in member.conversation(), "in the other")
                assert member.conversation().count(warning) == 1

    run(scenario())


def test_messages_dropped_as_dated_ahead_are_said_once(tmp_path: Path, relay: RelayProcess) -> None:
    """A member whose clock is 12 minutes fast is dropped by everyone (PROTOCOL.md 7), and
    the chat showed nothing: the others did not know why they heard nothing."""
    key = make_minikey(secrets.randbelow)
    bob_store = new_store(tmp_path / "bob.json", room(key, relay.url))
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    fast = now_ms() + 12 * 60_000

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(bob_store, "bob")) as bob:
                await bob.until(lambda: "Online: 2" in bob.members(), "both joined")
                for ref in range(1, 6):
                    await raw.send(text_publish(keys, alice, ref, f"fast {ref}", at_ms=fast))
                await raw.send(text_publish(keys, alice, 6, "on time"))
                await bob.until(lambda: bool(bob.lines_with("on time")), "the one on time")
                said = "A message dated 12 minutes ahead of this computer's clock was dropped"
                assert bob.conversation().count(said) == 1
                assert not bob.lines_with("fast ")

    run(scenario())


def test_a_chat_with_no_rooms_says_how_to_get_one(tmp_path: Path) -> None:
    store = new_store(tmp_path / "store.json")

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            await member.until(lambda: "No rooms here" in member.conversation(), "why")
            assert "instantroom new" in member.conversation()
            assert "no room" in member.status()
            await member.say("hello?")
            await member.until(lambda: "no room here to send to" in member.conversation(), "no")
            await member.say("/help")
            await member.until(lambda: "/leave" in member.conversation(), "the help")
            await member.say("/key")
            await member.until(lambda: "Open a room first" in member.conversation(), "why")
            assert member.app.is_running

    run(scenario())


def test_the_help_fits_an_80_column_terminal_line_for_line(tmp_path: Path) -> None:
    """Beside the list of rooms, no line of /help wraps: each is drawn whole, as written."""
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), NOWHERE))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice"), size=(80, 24)) as member:
            await member.until(lambda: member.sidebar() != [], "the list of rooms")
            await member.say("/help")
            await member.until(lambda: "/leave" in member.conversation(), "the help")
            drawn = [line.rstrip() for line in member.conversation().splitlines()]
            for line in HELP.splitlines():
                assert line in drawn

    run(scenario())


def test_the_status_line_shows_no_user_name_or_password_of_the_relay(tmp_path: Path) -> None:
    """The client never shows a relay address's credentials; the status line did."""
    server = "http://someone:hunter2@127.0.0.1:9/"
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), server))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            await member.until(lambda: "on http://127.0.0.1:9/" in member.status(), "the relay")
            screen = member.status() + member.members() + member.conversation()
            assert "hunter2" not in screen
            assert "someone" not in screen

    run(scenario())


def test_keys_typed_fast_after_enter_are_the_next_message_not_part_of_this_one(
    tmp_path: Path,
) -> None:
    """Keys come in faster than the chat handles them (typed fast, or a pasted text from a
    terminal without bracketed paste): Input submitted what it held once Enter had gone
    round the app, by which time the keys after it were in the line too. Each message
    went out holding the next ones, twice, and the last was cleared away unsent."""
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), NOWHERE))

    def key(char: str) -> events.Key:
        names = {" ": "space", "\r": "enter"}
        return events.Key(names.get(char, char), char)

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            field = member.app.query_one("#input", Input)
            for char in "msg 1\rmsg 2\rmsg 3":  # all queued before the chat handles one
                member.app.post_message(key(char))
            await member.until(lambda: field.value == "msg 3", "the third, not sent yet")
            await member.until(lambda: bool(member.lines_with("msg 2")), "the second")
            assert [line.split("(you)")[1].split()[:2] for line in member.lines_with("msg")] == [
                ["msg", "1"],
                ["msg", "2"],
            ]

    run(scenario())


def test_a_name_from_a_terminal_that_is_not_utf_8_is_refused_in_words(tmp_path: Path) -> None:
    """A name typed in a Latin-1 terminal reaches Python with surrogates: encoding it
    ended the command with a traceback."""
    path = tmp_path / "store.json"
    new_store(path, room(make_minikey(secrets.randbelow), NOWHERE, "team"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(path)}
    status, said = in_a_terminal(
        [sys.executable.encode(), b"-m", b"instantroom", b"chat", b"--name", b"Zo\xeb"], environ
    )
    assert status == 2, said
    assert "Traceback" not in said
    assert "A name is UTF-8" in said


def test_a_narrow_terminal_says_in_the_status_line_what_came_in_other_rooms(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """The rooms' list, with each room's count of new messages, is hidden when the
    terminal is narrow: the status line counts them instead."""
    one, two = make_minikey(secrets.randbelow), make_minikey(secrets.randbelow)
    store = new_store(
        tmp_path / "store.json", room(one, relay.url, "one"), room(two, relay.url, "two")
    )
    keys = RoomKeys.from_minikey(two)
    bob = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    async def scenario() -> None:
        async with raw_client(relay.ws_url) as raw:
            await raw.join(keys)
            async with on_screen(ChatApp(store, "alice", room="one")) as alice:
                await alice.do(alice.pilot.resize_terminal(50, 20))
                await alice.until(lambda: "Online: 1" in alice.members(), "room one joined")
                await raw.send(text_publish(keys, bob, 1, "in room two"))
                await alice.until(lambda: "1 new in other rooms" in alice.status(), "the count")
                await alice.press("ctrl+down")
                await alice.until(  # the line wraps
                    lambda: "in room two" in " ".join(alice.conversation().split()), "room two"
                )
                assert "new in other rooms" not in alice.status()

    run(scenario())


def test_a_relay_that_cannot_be_reached_says_why_in_the_status_line(tmp_path: Path) -> None:
    """A relay never reached (a refused port, a wrong host, https:// to a relay without
    TLS) showed "connecting..." forever, with no reason: the status line says why, as
    the web client does, and without the address's user name or password."""
    port = free_port()
    server = f"http://someone:hunter2@127.0.0.1:{port}/"
    store = new_store(tmp_path / "store.json", room(make_minikey(secrets.randbelow), server))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as member:
            await member.until(lambda: "could not be reached" in member.status(), "the reason")
            status = member.status()
            assert status.startswith(
                f"○ connecting… The relay at 127.0.0.1:{port} could not be reached: nothing "
                "answers on that port"
            )
            screen = status + member.members() + member.conversation()
            assert "hunter2" not in screen
            assert "someone" not in screen

    run(scenario())
