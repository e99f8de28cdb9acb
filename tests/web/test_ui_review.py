"""The web client as people meet it: what members write stays inside its bubble, long
words wrap, the conversation follows new messages, a draft outlasts a look at another
screen, and a relay that cannot be reached says so."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable

from PIL import Image, ImageChops
from playwright.sync_api import Locator, expect

from instantroom.testing import LOOPBACK, RelayProcess
from tests.web.conftest import PHONE, Phone, SharedRoom, open_vault

Box = tuple[float, float, float, float]  # left, top, right, bottom, in CSS pixels

# Combining marks that stack above (U+0300...) and below (U+0316...) a letter: DejaVu
# draws each one, so a letter under dozens of them reaches far above and below its line.
ABOVE = "".join(map(chr, range(0x300, 0x316)))
BELOW = "".join(map(chr, range(0x316, 0x334)))
# Wait until the page has drawn, and run the effects Preact runs after drawing.
AFTER_PAINT = """() => new Promise((done) =>
  requestAnimationFrame(() => setTimeout(() => requestAnimationFrame(() => done(null)), 0)))"""


def in_a_room(
    relay: RelayProcess, phones: Callable[..., Phone], label: str = "Room", bob: str = "Bob"
) -> tuple[Phone, Phone, SharedRoom]:
    alice, other = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room(label, "Alice")
    alice.open_room()
    other.open(relay.url)
    other.set_password("bob's long password")
    other.join(room.key, bob)
    alice.expect_members(2)
    return alice, other, room


def box_of(locator: Locator) -> Box:
    found = locator.bounding_box()
    assert found is not None
    return (found["x"], found["y"], found["x"] + found["width"], found["y"] + found["height"])


def inside(inner: Box, outer: Box) -> bool:
    return (
        inner[0] >= outer[0]
        and inner[1] >= outer[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def painted(phone: Phone, element: Locator, region: Locator) -> Box:
    """Where, within ``region``, ``element`` paints: the box of the pixels that change when
    it is hidden (visibility changes no layout)."""
    area = region.bounding_box()
    assert area is not None

    def shot() -> Image.Image:
        png = phone.page.screenshot(clip=area, animations="disabled", caret="hide")
        return Image.open(io.BytesIO(png)).convert("RGB")

    shown = shot()
    element.evaluate("e => { e.style.visibility = 'hidden'; }")
    hidden = shot()
    element.evaluate("e => { e.style.visibility = ''; }")
    changed = ImageChops.difference(shown, hidden).getbbox()
    assert changed is not None, "the element paints nothing"
    scale = shown.width / area["width"]
    left, top, right, bottom = (value / scale for value in changed)
    return (area["x"] + left, area["y"] + top, area["x"] + right, area["y"] + bottom)


def test_marks_stacked_on_a_letter_paint_only_inside_their_own_box(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    # A name of 31 characters under the protocol's 64 bytes: a letter and 30 marks.
    name = "B" + ABOVE[:15] + BELOW[:15]
    alice, bob, _ = in_a_room(relay, phones, bob=name)
    zalgo = "Z" + (ABOVE + BELOW) * 8 + "algo a" + ABOVE * 10 + " b" + BELOW * 10
    for sent in ("before", zalgo, "after"):
        bob.send(sent)
        alice.expect_message(sent)
    messages = alice.by("messages").get_by_test_id("message")
    expect(messages).to_have_count(3)
    before, marked, after = messages.nth(0), messages.nth(1), messages.nth(2)
    bubble = box_of(marked)
    head = [
        box_of(marked.locator(f".message-head > {part}"))
        for part in (".sender", ".fingerprint", "time")
    ]

    text = painted(alice, marked.get_by_test_id("message-text"), alice.by("messages"))
    assert inside(text, bubble), (text, bubble)
    for part in (*head, box_of(before), box_of(after)):
        assert not overlap(text, part), (text, part)

    sender = painted(alice, marked.get_by_test_id("message-sender"), alice.by("messages"))
    assert inside(sender, bubble), (sender, bubble)
    for part in (box_of(marked.get_by_test_id("message-text")), box_of(before)):
        assert not overlap(sender, part), (sender, part)


def page_width(phone: Phone) -> int:
    """How wide the page is: a phone zooms out to show a page wider than its screen."""
    widths = phone.page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    return int(max(widths))


def test_long_words_in_names_and_labels_wrap_inside_the_page(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    # 60 and 40 characters without a space: the longest room name and nickname there are.
    label, nickname = "W" * 60, "N" * 40
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room(label, "Alice")
    expect(alice.page.get_by_role("heading", level=1)).to_contain_text(label)
    viewport = PHONE["viewport"]["width"]
    assert page_width(alice) == viewport
    alice.open_room()  # a plain click: nothing wider than the page covers the button
    assert page_width(alice) == viewport

    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.join(room.key, nickname)
    bob.send("hello")
    shown = alice.message_locator("hello")
    expect(shown).to_have_count(1)
    assert inside(box_of(shown.get_by_test_id("message-sender")), box_of(shown))
    assert page_width(alice) == viewport
    alice.by("nav-rooms").click()
    item = alice.by("room-item")
    assert inside(box_of(item.locator(".room-label")), box_of(item))
    assert page_width(alice) == viewport


def test_the_conversation_follows_new_messages_unless_one_reads_back(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob, _ = in_a_room(relay, phones)
    count = 20  # more than a phone's screen holds
    for number in range(count):
        bob.send(f"number {number}")
    newest = alice.message_locator(f"number {count - 1}")
    expect(newest).to_have_count(1)
    expect(newest).to_be_in_viewport(ratio=1)
    expect(alice.by("message-input")).to_be_in_viewport(ratio=1)
    expect(alice.message_locator("number 0")).not_to_be_in_viewport()

    # Reading back: what arrives then does not pull the conversation away.
    alice.by("messages").evaluate(
        """(list) => new Promise((done) => {
          list.addEventListener("scroll", () => done(null), { once: true });
          list.scrollTop = 0;
        })"""
    )
    expect(alice.message_locator("number 0")).to_be_in_viewport(ratio=1)
    bob.send("while Alice reads back")
    expect(alice.message_locator("while Alice reads back")).to_have_count(1)
    alice.page.evaluate(AFTER_PAINT)
    expect(alice.message_locator("number 0")).to_be_in_viewport(ratio=1)
    expect(alice.message_locator("while Alice reads back")).not_to_be_in_viewport()

    # One's own message is always shown.
    alice.send("mine")
    expect(alice.message_locator("mine")).to_be_in_viewport(ratio=1)


# The conversation scrolled to its end, and more of it (as a second message of a burst)
# before the scroll event that follows a frame later: 200 px of padding the app does not
# draw, taken away once that event was heard.
GROWS_BEFORE_THE_SCROLL_EVENT = """(list) => new Promise((done) => {
  list.addEventListener("scroll", () => {
    list.addEventListener("scroll", () => {
      requestAnimationFrame(() => { list.style.paddingBottom = ""; done(null); });
    }, { once: true });
    list.scrollTop = list.scrollHeight;
    list.style.paddingBottom = "200px";
  }, { once: true });
  list.scrollTop = list.scrollHeight - list.clientHeight - 30;
})"""


def test_messages_that_arrive_together_are_followed_too(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """A scroll event heard after more had arrived read as reading back: the conversation
    stopped following, and a burst of messages left the newest out of view."""
    alice, bob, _ = in_a_room(relay, phones)
    for number in range(20):
        bob.send(f"number {number}")
    expect(alice.message_locator("number 19")).to_be_in_viewport(ratio=1)
    alice.by("messages").evaluate(GROWS_BEFORE_THE_SCROLL_EVENT)
    bob.send("after the burst")
    expect(alice.message_locator("after the burst")).to_be_in_viewport(ratio=1)


def test_a_longer_draft_or_the_room_options_keep_the_newest_message_in_view(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    """The conversation's box shrinks as the draft grows (field-sizing) or the options open:
    the newest message slid out of view below it, where the newest message was shown."""
    alice, bob, _ = in_a_room(relay, phones)
    count = 20  # more than a phone's screen holds
    for number in range(count):
        bob.send(f"number {number}")
    newest = alice.message_locator(f"number {count - 1}")
    expect(newest).to_be_in_viewport(ratio=1)

    alice.by("message-input").fill("one\ntwo\nthree\nfour\nfive")
    expect(newest).to_be_in_viewport(ratio=1)
    alice.page.get_by_role("button", name="Room options").click()
    expect(alice.by("leave-room")).to_be_visible()
    expect(newest).to_be_in_viewport(ratio=1)
    alice.page.get_by_role("button", name="Room options").click()
    expect(alice.by("leave-room")).to_have_count(0)
    expect(newest).to_be_in_viewport(ratio=1)


def test_a_draft_outlasts_other_screens_and_goes_with_the_lock(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    password = "alice's long password"
    alice = phones()
    alice.open(relay.url)
    alice.set_password(password)
    alice.create_room("First", "Alice")
    alice.open_room()
    draft = "half a thought, not sent yet"
    alice.by("message-input").fill(draft)

    alice.by("share-room").click()
    alice.by("open-room").click()
    expect(alice.by("message-input")).to_have_value(draft)

    alice.by("nav-rooms").click()
    alice.create_room("Second", "Alice")
    alice.open_room()
    expect(alice.by("message-input")).to_have_value("")  # each room its own
    alice.by("message-input").fill("for the second room")
    alice.by("nav-rooms").click()
    alice.by("room-item").filter(has_text="First").click()
    expect(alice.by("message-input")).to_have_value(draft)
    alice.by("nav-settings").click()
    alice.by("nav-rooms").click()
    alice.by("room-item").filter(has_text="Second").click()
    expect(alice.by("message-input")).to_have_value("for the second room")

    # In memory only: never in the store, and gone once locked.
    assert draft not in str(open_vault(alice.page, password))
    alice.by("nav-settings").click()
    alice.by("lock-now").click()
    alice.unlock(password)
    alice.by("room-item").filter(has_text="First").click()
    alice.expect_online()
    expect(alice.by("message-input")).to_have_value("")


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_relay_that_cannot_be_reached_says_so(
    relay: RelayProcess, phones: Callable[..., Phone]
) -> None:
    alice, bob = phones(), phones()
    alice.open(relay.url)
    alice.set_password("alice's long password")
    room = alice.create_room("Here", "Alice")
    bob.open(relay.url)
    bob.set_password("bob's long password")
    bob.by("nav-join").click()
    port = closed_port()
    bob.by("join-key").fill(f"http://{LOOPBACK}:{port}/#{room.key}")
    bob.by("nickname").fill("Bob")
    bob.by("join").click()
    expect(bob.by("room-title")).to_be_visible()
    expect(bob.by("connection-state")).to_have_text("reconnecting…")
    expect(bob.by("connection-reason")).to_contain_text(
        f"The relay at {LOOPBACK}:{port} could not be reached"
    )
