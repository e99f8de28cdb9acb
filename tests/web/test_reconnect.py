"""A relay restart: the pages say they are offline, then come back by themselves."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import assert_exited_cleanly, running_relay
from tests.web.conftest import Phone

ONLINE = re.compile(r"^\s*online\s*$", re.I)


def test_pages_come_back_after_a_relay_restart(phones: Callable[..., Phone]) -> None:
    with running_relay("--shutdown-grace", "0.2") as first:
        alice, bob = phones(), phones()
        alice.open(first.url)
        alice.set_password("alice's long password")
        room = alice.create_room("Restarted", "Alice")
        alice.open_room()
        bob.open(room.invite)
        bob.set_password("bob's long password", then="join-key")
        bob.by("nickname").fill("Bob")
        bob.by("join").click()
        bob.expect_online()
        alice.expect_members(2)
        alice.send("before the restart")
        bob.expect_message("before the restart")
    assert_exited_cleanly(first)

    for phone in (alice, bob):
        expect(phone.by("connection-state")).not_to_have_text(ONLINE)

    with running_relay("--shutdown-grace", "0.2", port=first.port) as second:
        for phone in (alice, bob):
            phone.expect_online()
            phone.expect_members(2)
        alice.send("after the restart")
        assert bob.expect_message("after the restart").sender == "Alice"
        bob.send("and back")
        assert alice.expect_message("and back").sender == "Bob"
    assert_exited_cleanly(second)
