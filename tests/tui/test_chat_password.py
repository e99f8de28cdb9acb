"""The chat after another program changed the key store's password: /password asks for the
new one, which is never sent, shown, or lost to a quit while it is tried."""

from __future__ import annotations

import errno
import secrets
import time
from pathlib import Path

import pytest
from textual import events
from textual.widgets import Input, Static

from instantroom.client import keystore
from instantroom.client.keystore import KeyStore
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import RelayProcess, run
from instantroom.tui.app import ChatApp, MessageInput, PasswordScreen
from tests.tui.test_chat import NOWHERE, PASSWORD, Member, new_store, on_screen, room, two_stores

NEW_PASSWORD = "s3cret new password"


def one_room_chat(tmp_path: Path) -> tuple[Path, ChatApp]:
    path = tmp_path / "store.json"
    return path, ChatApp(new_store(path, room(make_minikey(secrets.randbelow), NOWHERE)), "alice")


async def changed_elsewhere(member: Member, path: Path) -> None:
    """Another program changes the password; the chat, with /history on to save, stops."""
    KeyStore.open(path, PASSWORD).change_password(NEW_PASSWORD)
    await member.say("/history on")
    await member.until(lambda: member.app.unsaved is not None, "the saving stopped")


async def asked(member: Member) -> None:
    await member.say("/password")
    await member.until(lambda: isinstance(member.app.screen, PasswordScreen), "the question")


async def answer(member: Member, password: str) -> None:
    async def typed() -> None:
        member.app.screen.query_one("#password-input", Input).value = password
        await member.pilot.press("enter")

    await member.do(typed())


def test_a_password_typed_right_after_slash_password_never_reaches_the_room(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """All in the app's queue before the question shows (a fast typist, a terminal without
    bracketed paste): the keys after /password's Enter went to the input line, and the
    next Enter sent the password to the room."""
    alice_store, bob_store = two_stores(tmp_path, relay)
    app = ChatApp(alice_store, "alice")

    async def scenario() -> None:
        async with on_screen(app) as alice, on_screen(ChatApp(bob_store, "bob")) as bob:
            await bob.until(lambda: "Online: 2" in bob.members(), "both online")
            await changed_elsewhere(alice, alice_store.path)
            for char in f"/password\r{NEW_PASSWORD}\r":
                app.post_message(events.Key("enter" if char == "\r" else char, char))
            await alice.until(lambda: isinstance(app.screen, PasswordScreen), "the question")
            await alice.say("after")  # a message still goes once the question is gone
            await alice.do(alice.pilot.pause(0.5))
            if isinstance(app.screen, PasswordScreen):
                await alice.press("escape")
            await alice.say("a message")
            await bob.until(lambda: "a message" in bob.conversation(), "the next message")
            assert NEW_PASSWORD not in bob.conversation()
            assert NEW_PASSWORD not in alice.conversation()
            assert NEW_PASSWORD not in app.query_one("#input", MessageInput).value

    run(scenario())


def test_a_pasted_slash_password_and_password_takes_it_and_shows_it_nowhere(
    tmp_path: Path,
) -> None:
    path, app = one_room_chat(tmp_path)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await changed_elsewhere(member, path)

            async def pasted() -> None:
                line = app.query_one("#input", MessageInput)
                line.post_message(events.Paste(f"/password\n{NEW_PASSWORD}\n"))
                await member.pilot.pause(0.1)
                await member.pilot.press("enter")

            await member.do(pasted())
            await member.until(lambda: app.unsaved is None, "saved again")
            assert not isinstance(app.screen, PasswordScreen)
            assert NEW_PASSWORD not in member.conversation()
            assert not any(NEW_PASSWORD in note for note in member.notes())

    run(scenario())
    assert [r.keep_history for r in KeyStore.open(path, NEW_PASSWORD).rooms] == [True]


@pytest.fixture
def slow_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 as slow as on a slow machine: the question can close while it runs."""
    derive = keystore._derive

    def slow(*args: object) -> bytes:
        time.sleep(0.8)
        return derive(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(keystore, "_derive", slow)


@pytest.mark.parametrize("then", ["escape", "ctrl+q"])
@pytest.mark.usefixtures("slow_argon2")
def test_a_password_being_tried_when_the_question_closes_is_taken_and_saved(
    tmp_path: Path, then: str
) -> None:
    path, app = one_room_chat(tmp_path)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await changed_elsewhere(member, path)
            await asked(member)
            await answer(member, NEW_PASSWORD)
            await member.press(then)
            if then == "escape":
                await member.until(lambda: app.unsaved is None, "saved again")
                assert not isinstance(app.screen, PasswordScreen)

    run(scenario())
    assert [r.keep_history for r in KeyStore.open(path, NEW_PASSWORD).rooms] == [True]


def test_a_store_that_cannot_be_read_is_said_in_the_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, app = one_room_chat(tmp_path)
    read_bytes = Path.read_bytes

    def failing(self: Path) -> bytes:  # a USB stick pulled out, a share gone
        if self == path:
            raise OSError(errno.EIO, "Input/output error", str(self))
        return read_bytes(self)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await changed_elsewhere(member, path)
            await asked(member)
            monkeypatch.setattr(Path, "read_bytes", failing)
            await answer(member, NEW_PASSWORD)
            problem = app.screen.query_one("#password-problem", Static)
            await member.until(lambda: "could not be read" in str(problem.content), "said")
            assert "Input/output error" in str(problem.content)
            assert app.is_running

    run(scenario())


def test_slash_password_after_the_store_was_deleted_says_a_password_cannot_help(
    tmp_path: Path,
) -> None:
    path, app = one_room_chat(tmp_path)

    async def scenario() -> None:
        async with on_screen(app) as member:
            await changed_elsewhere(member, path)
            await asked(member)
            path.unlink()  # discarded meanwhile
            await answer(member, NEW_PASSWORD)
            await member.until(lambda: not isinstance(app.screen, PasswordScreen), "gone")
            await member.say("/password")

            def said() -> str:  # as drawn, its lines joined again
                return " ".join(member.conversation().split())

            await member.until(lambda: "A password cannot help" in said(), "why not")
            assert "was deleted" in said()
            assert not isinstance(app.screen, PasswordScreen)

    run(scenario())
    assert not path.exists()
