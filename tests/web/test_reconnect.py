"""A relay restart: the pages say they are offline, then come back by themselves."""

from __future__ import annotations

import contextlib
import re
import urllib.request
from collections.abc import Callable

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from instantroom.testing import assert_exited_cleanly, running_relay
from tests.web.conftest import Phone

ONLINE = re.compile(r"^\s*online\s*$", re.I)


def alice_and_bob(url: str, phones: Callable[..., Phone], label: str) -> tuple[Phone, Phone]:
    """Alice makes a room on the relay at ``url``; Bob joins by her invite link."""
    alice, bob = phones(), phones()
    alice.open(url)
    alice.set_password("alice's long password")
    room = alice.create_room(label, "Alice")
    alice.open_room()
    bob.open(room.invite)
    bob.set_password("bob's long password", then="join-key")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    bob.expect_online()
    alice.expect_members(2)
    return alice, bob


def test_pages_come_back_after_a_relay_restart(phones: Callable[..., Phone]) -> None:
    with running_relay("--shutdown-grace", "0.2") as first:
        alice, bob = alice_and_bob(first.url, phones, "Restarted")
        alice.send("before the restart")
        bob.expect_message("before the restart")
    assert_exited_cleanly(first)

    for phone in (alice, bob):
        expect(phone.by("connection-state")).not_to_have_text(ONLINE)
        # The relay's last count, and who it said was here, would be stale now.
        expect(phone.by("members")).to_have_text("who is online is not known")
        expect(phone.by("member-name")).to_have_count(0)

    with running_relay("--shutdown-grace", "0.2", port=first.port) as second:
        for phone in (alice, bob):
            phone.expect_online()
            phone.expect_members(2)
        alice.send("after the restart")
        assert bob.expect_message("after the restart").sender == "Alice"
        bob.send("and back")
        assert alice.expect_message("and back").sender == "Bob"
    assert_exited_cleanly(second)


def test_what_was_written_offline_all_arrives_after_the_relay_is_back(
    phones: Callable[..., Phone],
) -> None:
    """More than the relay's burst written while it was away: the page holds them until
    the room refills, sends at most 100 at a time (MAX_IN_FLIGHT), waits out the rate
    limit, and loses nothing. The burst is 60 here, not 200: fewer to type."""
    count = 110
    with running_relay("--shutdown-grace", "0.2") as first:
        alice, bob = alice_and_bob(first.url, phones, "Backlog")
    for phone in (alice, bob):
        expect(phone.by("connection-state")).not_to_have_text(ONLINE)
    for n in range(count):
        alice.send(f"offline {n}")

    with running_relay(
        "--shutdown-grace", "0.2", "--message-burst", "60", port=first.port
    ) as second:
        # Bob is back first ("Reconnect now" rather than the end of his backoff), so the
        # backlog Alice holds until the room refills reaches him.
        for phone in (bob, alice):
            if phone.by("reconnect-now").count():
                # The page may reconnect by itself meanwhile, and the button then goes:
                # nothing left to click, which is as good.
                with contextlib.suppress(PlaywrightTimeoutError):
                    phone.by("reconnect-now").click(timeout=3_000)
            phone.expect_online()
        expect(bob.by("message")).to_have_count(count, timeout=30_000)
        expect(alice.page.get_by_text("sending…")).to_have_count(0, timeout=30_000)
        expect(alice.by("connection-state")).to_have_text(ONLINE)
        texts = bob.by("message-text").all_inner_texts()
        assert [t.strip() for t in texts] == [f"offline {n}" for n in range(count)]
        # And the rate limit was met, and waited out: the relay refused some as too fast.
        with urllib.request.urlopen(f"{second.url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert re.search(
            r'^instantroom_rejections_total\{reason="rate_limited"\} [1-9]', metrics, re.M
        )
    assert_exited_cleanly(second)
