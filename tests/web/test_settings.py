"""Settings: the relay for new rooms (the page's own by default) can be another one."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import RelayProcess, assert_exited_cleanly, running_relay
from tests.web.conftest import Phone, listening


def exactly(url: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(url)}/?$")


def test_new_rooms_use_the_relay_saved_in_settings(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    # Another relay, which lets pages from the first one in.
    with running_relay("--origins", relay.url) as other:
        phone = phones()
        phone.open(relay.url)
        phone.set_password("a long password")
        phone.by("nav-settings").click()
        expect(phone.by("server-url")).to_have_value(exactly(relay.url))
        phone.by("server-url").fill(other.url)
        phone.by("save-settings").click()
        phone.by("nav-rooms").click()

        room = phone.create_room("Elsewhere", "Eli")
        assert room.invite == f"{other.url}/#{room.key}"
        phone.open_room()
        with listening(other.url, room.key) as lines:
            phone.expect_members(2)  # the listener, on the other relay, is in
            phone.send("through the other relay")
            heard = json.loads(lines.next_line())
            assert (heard["name"], heard["text"]) == ("Eli", "through the other relay")

        # Saved: still there after a reload.
        phone.page.reload()
        phone.unlock("a long password")
        phone.by("nav-settings").click()
        expect(phone.by("server-url")).to_have_value(exactly(other.url))
    assert_exited_cleanly(other)
