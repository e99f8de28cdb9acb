"""Review of the chat: what it says it deleted, how much history it keeps, what an ACK
redraws, what it does with a text it does not send, which room's count it clears, how
it fits a short terminal, and what Ctrl+P offers."""

from __future__ import annotations

import errno
import re
import secrets
from pathlib import Path

import pytest
from textual import events
from textual.command import CommandPalette
from textual.widgets import Input, RichLog, Static

from instantroom.client import keystore
from instantroom.client.keystore import HistoryEntry, KeyStore, StoredRoom
from instantroom.protocol.envelope import MAX_BODY_BYTES, Kind, new_message
from instantroom.protocol.kdf import DeviceKey
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.session import MessageReceived
from instantroom.testing import RelayProcess, run
from instantroom.tui.app import ChatApp
from tests.tui.test_chat import (
    NOWHERE,
    PASSWORD,
    Member,
    new_store,
    now_ms,
    on_screen,
    room,
    two_stores,
)
from tests.tui.test_hostile_relay_review import feed

FINGERPRINT = "AAAA-BBBB-CCCC-DDDD"
WEB_STORE = Path(__file__).parents[2] / "web" / "src" / "store" / "keystore.js"


def labels(member: Member) -> list[str]:
    return [str(label.content) for label in member.app.query(".room-label").results(Static)]


def test_what_the_store_could_not_be_told_is_said_gone_from_the_screen_only(
    tmp_path: Path,
) -> None:
    """Another program changed the store's password: the chat saves nothing more, and
    /delete, /clear and /leave must not say that a message or a key left this device."""
    path = tmp_path / "store.json"
    key = make_minikey(secrets.randbelow)
    history = [
        HistoryEntry(f"{n:032x}", now_ms() - 1000 + n, "bob", FINGERPRINT, f"secret {n}")
        for n in (1, 2, 3)
    ]
    store = new_store(path, room(key, NOWHERE, keep_history=True, history=history))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            KeyStore.open(path, PASSWORD).change_password("another password")
            await alice.until(
                lambda: any("saves nothing more" in note for note in alice.notes()), "stopped"
            )
            await alice.say("/delete 1")
            await alice.until(lambda: "secret 1" not in alice.conversation(), "deleted")
            await alice.say("/clear")
            await alice.until(lambda: "secret 2" not in alice.conversation(), "cleared")
            await alice.say("/leave")
            await alice.say("/leave")
            await alice.until(lambda: alice.sidebar() == [], "left")
            notes = alice.notes()
            assert not any("Message 1 deleted" in note for note in notes), notes
            assert not any("deleted from" in note for note in notes), notes
            said = [note for note in notes if "gone from this screen only" in note]
            assert len(said) == 3, notes
            assert all("the key store could not be written" in note for note in said)
            assert "left on the relay" in said[-1]
            assert "still holds its key and messages" in said[-1]

    run(scenario())
    (kept,) = KeyStore.open(path, "another password").rooms  # as the chat said
    assert kept.key == key


def test_a_store_that_cannot_be_written_yet_holds_a_left_room_until_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "store.json"
    store = new_store(path, room(make_minikey(secrets.randbelow), NOWHERE))
    write = keystore._write_atomically
    failing = True

    def full_disk(target: Path, data: bytes) -> None:
        if failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(target, data)

    monkeypatch.setattr(keystore, "_write_atomically", full_disk)

    async def scenario() -> None:
        nonlocal failing
        async with on_screen(ChatApp(store, "alice")) as alice:
            await alice.say("/leave")
            await alice.say("/leave")
            await alice.until(
                lambda: any("gone from this screen only" in n for n in alice.notes()), "said"
            )
            (note,) = [n for n in alice.notes() if "gone from this screen only" in n]
            assert "until it can be" in note
            assert KeyStore.open(path, PASSWORD).rooms  # as said
            failing = False  # the next tick writes it
            await alice.until(lambda: not KeyStore.open(path, PASSWORD).rooms, "written")

    run(scenario())


def test_kept_history_is_the_newest_1000_messages_as_the_web_client_keeps() -> None:
    web = re.search(r"MAX_MESSAGES_PER_ROOM = (\d+);", WEB_STORE.read_text())
    assert web is not None
    assert keystore.MAX_HISTORY_PER_ROOM == int(web[1]) == 1000
    stored = StoredRoom(make_minikey(secrets.randbelow), "team", NOWHERE, 0, True)
    for n in range(1005):
        stored.keep(HistoryEntry(f"{n:032x}", 10_000 + n, "bob", FINGERPRINT, f"m{n}"))
    stored.keep(HistoryEntry("ff" * 16, 5, "bob", FINGERPRINT, "older than all"))
    stored.keep(HistoryEntry("ee" * 16, 10_500, "bob", FINGERPRINT, "late"))  # in its place
    assert len(stored.history) == 1000
    assert [e.timestamp_ms for e in stored.history] == sorted(
        e.timestamp_ms for e in stored.history
    )
    assert stored.history[-1].text == "m1004"
    assert "older than all" not in [e.text for e in stored.history]
    assert "late" in [e.text for e in stored.history]


def test_a_store_holding_more_history_than_the_bound_opens_with_the_newest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.json"
    stored = room(make_minikey(secrets.randbelow), NOWHERE, keep_history=True)
    # As a version without the bound wrote it: not through keep().
    stored.history = [
        HistoryEntry(f"{n:032x}", 10_000 + n, "bob", FINGERPRINT, f"m{n}") for n in range(1200)
    ]
    new_store(path, stored)
    (opened,) = KeyStore.open(path, PASSWORD).rooms
    assert len(opened.history) == 1000
    assert (opened.history[0].text, opened.history[-1].text) == ("m200", "m1199")


def test_the_chat_keeps_no_more_history_than_the_bound(
    tmp_path: Path, relay: RelayProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keystore, "MAX_HISTORY_PER_ROOM", 5)
    path = tmp_path / "store.json"
    store = new_store(path, room(make_minikey(secrets.randbelow), relay.url, keep_history=True))
    bob = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    def received(room_id: bytes, n: int) -> MessageReceived:
        message = new_message(
            bob, "bob", Kind.TEXT, f"from bob {n}".encode(), token_bytes=secrets.token_bytes,
            now_ms=now_ms() - 100 + n,
        )  # fmt: skip
        return MessageReceived(room_id, message, bob.fingerprint, False)

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            await alice.until(lambda: "connected" in alice.status(), "connected")
            (view,) = alice.app._views.values()
            assert view.client is not None
            await feed(alice, view.client, (received(view.room_id, n) for n in range(8)))
            await alice.say("mine")
            await alice.until(lambda: "waiting" not in alice.status(), "taken")

    run(scenario())
    texts = [entry.text for entry in KeyStore.open(path, PASSWORD).rooms[0].history]
    assert texts == ["from bob 4", "from bob 5", "from bob 6", "from bob 7", "mine"]


def test_an_ack_draws_that_line_again_not_the_whole_conversation(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, _ = two_stores(tmp_path, relay)

    async def scenario() -> None:
        async with on_screen(ChatApp(alice_store, "alice")) as alice:
            await alice.until(lambda: "connected" in alice.status(), "connected")
            for n in range(30):
                alice.app._note(alice.app._current(), f"a note {n} to draw")
            drawn = 0
            show = alice.app._show_conversation

            def counted() -> None:
                nonlocal drawn
                drawn += 1
                show()

            alice.app._show_conversation = counted  # type: ignore[method-assign]
            await alice.say("first of mine")
            await alice.say("second of mine " + "long " * 40)  # wraps: rows to keep
            await alice.say("third of mine")
            await alice.until(lambda: "waiting" not in alice.status(), "taken")
            await alice.until(lambda: "waiting to send" not in alice.conversation(), "redrawn")
            await alice.do(alice.pilot.pause(0.3))  # a redraw would be due by then
            assert drawn == 0
            in_place = alice.conversation()
            await alice.do(alice.pilot.pause())
            show()  # drawn whole, it reads the same
            assert alice.conversation() == in_place
            assert "third of mine" in in_place.splitlines()[-1]

    run(scenario())


def test_a_paste_that_is_no_command_goes_back_to_the_input_line(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))
    pasted = "/var/log is full again,\nrotate the logs before the backup at 2am?"

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            line_in = alice.app.query_one("#input", Input)

            async def paste_and_enter() -> None:
                line_in.post_message(events.Paste(pasted))
                await alice.pilot.pause()
                await alice.pilot.press("enter")

            await alice.do(paste_and_enter())
            await alice.until(lambda: "There is no command /var" in alice.conversation(), "why")
            assert line_in.value == pasted
            assert "back in the input line" in " ".join(alice.conversation().split())

    run(scenario())


def test_a_message_too_long_goes_back_to_the_input_line(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, _ = two_stores(tmp_path, relay)
    too_long = "x" * (MAX_BODY_BYTES + 1)

    async def scenario() -> None:
        async with on_screen(ChatApp(alice_store, "alice")) as alice:
            await alice.until(lambda: "connected" in alice.status(), "connected")
            await alice.say(too_long)
            await alice.until(lambda: "at most" in alice.conversation(), "why")
            assert alice.app.query_one("#input", Input).value == too_long
            assert "back in the input line" in " ".join(alice.conversation().split())
            assert "xxxxxxxxxx" not in alice.conversation()  # not shown twice

    run(scenario())


def test_leaving_the_room_shown_clears_no_other_room_s_count(
    tmp_path: Path, relay: RelayProcess
) -> None:
    keys = [make_minikey(secrets.randbelow) for _ in range(3)]
    alice_store = new_store(
        tmp_path / "a.json", *(room(k, relay.url, n) for k, n in zip(keys, "ABC", strict=True))
    )
    bob_store = new_store(
        tmp_path / "b.json", *(room(k, relay.url, n) for k, n in zip(keys, "ABC", strict=True))
    )

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(alice_store, "alice", room="B")) as alice,
            on_screen(ChatApp(bob_store, "bob", room="C")) as bob,
        ):
            await alice.until(lambda: "Online: 2" in alice.members(), "both in B")
            await bob.until(lambda: "Online: 2" in bob.members(), "both in C")
            await bob.say("news in C")
            await bob.say("more news in C")
            await alice.until(lambda: "2 new" in labels(alice)[2], "C's count")
            await alice.say("/leave")
            await alice.say("/leave")  # B goes; A, first, is shown: C was never seen
            await alice.until(lambda: alice.sidebar() == ["A", "C"], "B gone")
            await alice.do(alice.pilot.pause(0.3))
            assert "2 new" in labels(alice)[1]
            assert "A on" in alice.status()

    run(scenario())


def test_a_short_terminal_keeps_its_rows_for_the_conversation(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice"), size=(40, 10)) as alice:
            for columns, rows, least in ((40, 10, 5), (60, 8, 3), (40, 30, 20)):
                await alice.do(alice.pilot.resize_terminal(columns, rows))
                await alice.do(alice.pilot.pause(0.2))
                conversation = alice.app.query_one("#conversation", RichLog)
                members = alice.app.query_one("#members", Static)
                status = alice.app.query_one("#status", Static)
                assert conversation.region.height >= least, (columns, rows)
                if rows < 16:
                    assert members.region.height == status.region.height == 1
                else:  # a tall one shows them whole
                    assert members.region.height > 1

    run(scenario())


def test_ctrl_p_offers_no_screenshot_of_the_keys_on_screen(tmp_path: Path) -> None:
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            await alice.press("ctrl+p")
            await alice.do(alice.pilot.pause(0.2))
            assert not isinstance(alice.app.screen, CommandPalette)
            actions = {binding.action for _, binding, *_ in alice.app.active_bindings.values()}
            assert not any("screenshot" in a or "command_palette" in a for a in actions)

    run(scenario())


def test_textual_screenshot_in_the_environment_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What TEXTUAL_SCREENSHOT and TEXTUAL_SCREENSHOT_LOCATION set, as Textual reads them
    # at import: the screen, room key and messages, had gone to a file readable by all.
    from textual import constants

    monkeypatch.setattr(constants, "SCREENSHOT_DELAY", 0.1)  # 0 divides by zero
    monkeypatch.setattr(constants, "SCREENSHOT_LOCATION", str(tmp_path / "shots"))
    (tmp_path / "shots").mkdir()
    key = make_minikey(secrets.randbelow)
    store = new_store(tmp_path / "s.json", room(key, NOWHERE))

    async def scenario() -> None:
        app = ChatApp(store, "alice")
        async with app.run_test() as pilot:
            await pilot.pause(0.5)

    run(scenario())
    assert list((tmp_path / "shots").iterdir()) == []


def type_a_secret(tmp_path: Path) -> None:
    """Open the chat and send TOPSECRETPLAINTEXT, until it shows."""
    store = new_store(tmp_path / "s.json", room(make_minikey(secrets.randbelow), NOWHERE))

    async def scenario() -> None:
        async with on_screen(ChatApp(store, "alice")) as alice:
            await alice.say("TOPSECRETPLAINTEXT")
            await alice.until(lambda: "TOPSECRETPLAINTEXT" in alice.conversation(), "shown")

    run(scenario())


def test_textual_log_in_the_environment_gets_nothing_typed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Textual appended every event to the file TEXTUAL_LOG names, each keystroke's input
    # value included (and so each message sent), readable by all.
    from textual import constants

    log = tmp_path / "textual.log"
    monkeypatch.setattr(constants, "LOG_FILE", str(log))
    type_a_secret(tmp_path)
    assert "TOPSECRET" not in (log.read_text() if log.exists() else "")


def test_textual_devtools_in_the_environment_gets_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TEXTUAL=devtools, with textual_dev installed (no dependency of ours, so stood in for
    # here), streamed every log line and print, each keystroke's input included, to a
    # console on this host.
    import sys
    import types

    sent: list[str] = []

    class DevtoolsClient:
        url = "ws://127.0.0.1:1"
        verbose = True
        is_connected = False

        def __init__(self, host: str) -> None:
            pass

        async def connect(self) -> None:
            sent.append("connect")
            self.is_connected = True

        async def disconnect(self) -> None:
            self.is_connected = False

        def log(self, *args: object, **kwargs: object) -> None:
            sent.append(repr(args))

    class StdoutRedirector:
        def __init__(self, devtools: DevtoolsClient) -> None:
            pass

        def write(self, text: str, *args: object) -> None:
            sent.append(text)

        def flush(self) -> None:
            pass

    package = types.ModuleType("textual_dev")
    client = types.ModuleType("textual_dev.client")
    client.DevtoolsClient = DevtoolsClient  # type: ignore[attr-defined]
    client.DevtoolsConnectionError = type("DevtoolsConnectionError", (Exception,), {})  # type: ignore[attr-defined]
    client.DevtoolsLog = lambda *args, **kwargs: args  # type: ignore[attr-defined]
    redirect = types.ModuleType("textual_dev.redirect_output")
    redirect.StdoutRedirector = StdoutRedirector  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "textual_dev", package)
    monkeypatch.setitem(sys.modules, "textual_dev.client", client)
    monkeypatch.setitem(sys.modules, "textual_dev.redirect_output", redirect)
    monkeypatch.setenv("TEXTUAL", "devtools")
    type_a_secret(tmp_path)
    assert sent == []
