"""The members line: who is online as the members announce it (PROTOCOL.md 5.7), beside
the relay's count, and how many of those counted said nothing; a name that comes with a new
key is marked there, and warned of in the conversation, before it writes a word."""

from __future__ import annotations

import secrets
from pathlib import Path

from instantroom.client.connection import RoomClient
from instantroom.display import printable
from instantroom.protocol.kdf import DeviceKey, RoomKeys, fingerprint
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.roster import Member
from instantroom.testing import RelayProcess, run
from instantroom.tui.app import MEMBERS_SHOWN, ChatApp
from tests.tui.test_chat import NOWHERE, new_store, on_screen, room, two_stores


def test_the_members_line_names_who_announced_and_counts_who_did_not(
    tmp_path: Path, relay: RelayProcess
) -> None:
    alice_store, bob_store = two_stores(tmp_path, relay)
    keys = RoomKeys.from_minikey(bob_store.rooms[0].key)
    alice_here = f"alice {alice_store.device.fingerprint}"

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(bob_store, "bob")) as bob,
            on_screen(ChatApp(alice_store, "alice")),
        ):
            await bob.until(lambda: alice_here in bob.members(), "alice named")
            # A script listening (it announces nothing): counted, not named.
            key = DeviceKey.from_private_bytes(secrets.token_bytes(32))
            async with RoomClient(relay.url, key, "listener") as listener:
                await listener.join(keys)
                await bob.until(lambda: "Online: 3" in bob.members(), "the listener counted")
                await bob.until(lambda: "1 not named" in bob.members(), "the listener")
                shown = bob.members()
                assert "listener" not in shown
                assert key.fingerprint not in shown
                # In the order: the count, the names, the silent ones, ourselves.
                you = f"you: bob {bob_store.device.fingerprint}"
                assert shown.index("Online: 3") < shown.index(alice_here)
                assert shown.index(alice_here) < shown.index("1 not named") < shown.index(you)
            await bob.until(lambda: "Online: 2" in bob.members(), "the listener gone")
            assert "not named" not in bob.members()
            assert alice_here in bob.members()

    run(scenario())


def test_a_known_name_announced_with_a_new_key_is_marked_and_warned_of_once(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """An impostor that only sits in the room under alice's name would be shown as alice:
    the members line marks it ⚠ and the conversation says so, before it writes anything;
    once it writes, the warning is not said again."""
    alice_store, bob_store = two_stores(tmp_path, relay)
    impostor_store = new_store(tmp_path / "impostor.json", *alice_store.rooms)
    impostor_fingerprint = impostor_store.device.fingerprint

    async def scenario() -> None:
        async with (
            on_screen(ChatApp(bob_store, "bob")) as bob,
            on_screen(ChatApp(alice_store, "alice")),
        ):
            alice_here = f"alice {alice_store.device.fingerprint}"
            await bob.until(lambda: alice_here in bob.members(), "alice named")
            assert "⚠" not in bob.members()
            async with on_screen(ChatApp(impostor_store, "alice")) as impostor:
                await bob.until(
                    lambda: f"⚠ alice {impostor_fingerprint}" in bob.members(), "the impostor"
                )
                await bob.until(lambda: bool(bob.lines_with("NEW device key")), "a warning")
                flat = " ".join(bob.conversation().split())
                assert f"alice is in the room with a NEW device key {impostor_fingerprint}" in flat
                # Both claim the name now: both are marked.
                assert f"⚠ {alice_here}" in bob.members()
                await impostor.say("it is me, honest")
                await bob.until(lambda: bool(bob.lines_with("honest")), "its message")
                assert len(bob.lines_with("NEW device key")) == 1

    run(scenario())


def member(name: str, *, key_changed: bool = False) -> Member:
    key = secrets.token_bytes(32)
    return Member(key, name, fingerprint(key), key_changed)


def test_the_members_line_shows_names_safely_warnings_first_and_a_big_room_in_brief(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path / "bob.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "bob")
    (view,) = app._views.values()
    hostile = "[bold]eve\x1b[2J\u202eevil\nmallory"
    flagged = member("alice", key_changed=True)
    others = [member(f"m{n}") for n in range(MEMBERS_SHOWN + 4)]
    view.roster = (*others, member(hostile), flagged)
    view.online = len(view.roster) + 1 + 2  # the roster, bob, and two who said nothing

    shown = app._members_text(view).plain

    assert shown.startswith(f"Online: {view.online} (you included)")
    # The one marked ⚠ first, though it came last; those past MEMBERS_SHOWN as a count.
    assert f"⚠ alice {flagged.fingerprint}" in shown
    assert shown.index("alice") < shown.index("m0 ")
    assert f"m{MEMBERS_SHOWN - 2} " in shown
    assert f"m{MEMBERS_SHOWN - 1} " not in shown
    assert f"and {len(view.roster) - MEMBERS_SHOWN} more" in shown
    assert "2 not named" in shown
    assert shown.endswith(f"you: bob {store.device.fingerprint}")
    # A name is shown as plain text, without what could draw on the screen or reorder it.
    view.roster = (member(hostile),)
    shown = app._members_text(view).plain
    assert printable(hostile) in shown
    assert not any(char in shown for char in "\x1b\u202e\n")
