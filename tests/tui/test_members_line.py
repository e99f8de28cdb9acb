"""The members line with a big roster (PROTOCOL.md 5.7): a hostile member can announce a
thousand throwaway keys, so what the line keeps per room is bounded, and it is worked out
again only when what it shows changed; it still follows every change that marks a name."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from instantroom.protocol.kdf import fingerprint
from instantroom.protocol.minikey import make_minikey
from instantroom.protocol.roster import Member
from instantroom.protocol.session import MAX_NAMES_PER_ROOM
from instantroom.tui import app as app_module
from instantroom.tui.app import MEMBERS_SHOWN, ChatApp, RoomView
from tests.tui.test_chat import NOWHERE, new_store, room

CYRILLIC_A = "\u0430"


def member(name: str, *, key_changed: bool = False) -> Member:
    key = secrets.token_bytes(32)
    return Member(key, name, fingerprint(key), key_changed)


@pytest.fixture
def app_and_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ChatApp, RoomView]:
    """A chat not on the screen (what it says goes to its room's lines only), and its room."""
    store = new_store(tmp_path / "bob.json", room(make_minikey(secrets.randbelow), NOWHERE))
    app = ChatApp(store, "bob")
    monkeypatch.setattr(app, "_widget", lambda selector, kind: None)
    (view,) = app._views.values()
    return app, view


def warnings(view: RoomView, text: str) -> int:
    return sum(1 for line in view.lines if line.kind == "warning" and text in line.text)


def test_the_names_flagged_and_changed_are_bounded_the_oldest_dropped(
    app_and_view: tuple[ChatApp, RoomView],
) -> None:
    app, view = app_and_view
    count = MAX_NAMES_PER_ROOM + 2
    # Names known with a new key, and names mixing scripts: more than a room keeps.
    changed = [member(f"changed {n}", key_changed=True) for n in range(count)]
    mixed = [member(f"{CYRILLIC_A}lice {n}") for n in range(count)]
    app._members_changed(view, tuple(changed[: count // 2] + mixed[: count // 2]))
    app._members_changed(view, tuple(changed[count // 2 :] + mixed[count // 2 :]))

    assert len(view.changed) == MAX_NAMES_PER_ROOM
    assert "changed 0" not in view.changed
    assert "changed 1" not in view.changed
    assert f"changed {count - 1}" in view.changed
    assert len(view.flagged) == MAX_NAMES_PER_ROOM
    assert f"{CYRILLIC_A}lice 1" not in view.flagged
    assert f"{CYRILLIC_A}lice {count - 1}" in view.flagged


def test_a_member_still_there_is_not_warned_of_again_once_its_flag_was_dropped(
    app_and_view: tuple[ChatApp, RoomView], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The room keeps every line here: its first warning is counted after a thousand more.
    monkeypatch.setattr(app_module, "MAX_LINES_PER_ROOM", 2 * MAX_NAMES_PER_ROOM)
    app, view = app_and_view
    look_alike = member(f"{CYRILLIC_A}lice")
    app._members_changed(view, (look_alike,))
    assert warnings(view, "mixes Latin and Cyrillic letters") == 1
    # So many other names flagged since that its own was dropped...
    for n in range(MAX_NAMES_PER_ROOM):
        app._flag_mixed_scripts(view, f"{CYRILLIC_A}nother {n}", "fp")
    assert f"{CYRILLIC_A}lice" not in view.flagged
    # ...and the roster changes around it: it came once, and was warned of once.
    app._members_changed(view, (look_alike, member("carol")))
    app._members_changed(view, (look_alike,))
    assert warnings(view, f"{CYRILLIC_A}lice mixes") == 1
    assert f"⚠ {CYRILLIC_A}lice" in app._members_text(view).plain


def test_the_line_is_made_again_only_when_what_it_shows_changed(
    app_and_view: tuple[ChatApp, RoomView],
) -> None:
    app, view = app_and_view
    alice, others = member("alice"), [member(f"m{n}") for n in range(MAX_NAMES_PER_ROOM - 1)]
    app._members_changed(view, (*others, alice))
    view.online = len(view.roster) + 1
    shown = app._members_text(view)
    # Nothing it shows changed: the very line made before.
    assert app._members_text(view) is shown
    view.saw("someone who writes", "an unknown fingerprint")  # not a member's name
    assert app._members_text(view) is shown
    # The count changed.
    view.online += 2
    assert "2 not named" in app._members_text(view).plain
    assert "⚠" not in app._members_text(view).plain
    # A message under alice's name from another key marks her (and puts her first): the
    # roster is the same tuple.
    view.saw("Alice", "another fingerprint")
    plain = app._members_text(view).plain
    assert f"⚠ alice {alice.fingerprint}" in plain
    assert plain.index("alice") < plain.index("m0 ")
    assert f"and {len(view.roster) - MEMBERS_SHOWN} more" in plain
    # The name seen with her key again: no longer marked.
    view.saw("alice", alice.fingerprint)
    assert "⚠" not in app._members_text(view).plain
    # Another member came with a new key under her name: both marked, for good.
    app._members_changed(view, (*others[1:], alice, member("alice", key_changed=True)))
    assert app._members_text(view).plain.count("⚠ alice") == 2
    app._members_changed(view, (*others, alice))
    assert app._members_text(view).plain.count("⚠ alice") == 1
