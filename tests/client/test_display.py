"""What the terminal shows of what members write (display.printable)."""

from __future__ import annotations

import pytest

from instantroom.display import expiry_text, printable

PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # with a zero-width non-joiner
ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("alice\u034f", "alice<U+034F>"),  # the combining grapheme joiner: not Cf
        ("a\u200blice", "a<U+200B>lice"),
        ("ali\u2065ce", "ali<U+2065>ce"),  # unassigned, default-ignorable
        ("a\u180bb", "a<U+180B>b"),
        ("pay\u00adpal", "pay<U+00AD>pal"),
        ("a\u3164b", "a<U+3164>b"),
        ("ok\U000e0068\U000e0069", "ok<U+E0068><U+E0069>"),
        ("a\u200cb", "a<U+200C>b"),  # joiners stay only in messages
        ("Bob\u2800", "Bob<U+2800>"),  # the blank braille pattern draws nothing
        (ENGLAND, "\U0001f3f4" + "".join(f"<U+{ord(c):04X}>" for c in ENGLAND[1:])),
        # What emoji need stays; direction overrides and controls are U+FFFD, as before.
        ("\U0001f469\u200d\U0001f4bb", "\U0001f469\u200d\U0001f4bb"),
        ("\u2764\ufe0f", "\u2764\ufe0f"),
        ("x\u202ey\x1b[2J", "x\ufffdy\ufffd[2J"),
    ],
)
def test_a_name_shows_every_invisible_character(text: str, shown: str) -> None:
    assert printable(text) == shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("alice\u034f", "alice<U+034F>"),
        ("pay\u00adpal", "pay<U+00AD>pal"),
        ("ok\U000e0068", "ok<U+E0068>"),
        # Persian and Indic text keep their joiners, but never two in a row.
        (
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
        ),
        ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),
        ("a\u200c\u200d\u200cb", "a\u200c<U+200D><U+200C>b"),
        ("\u2764\ufe0f\ufe0f", "\u2764\ufe0f<U+FE0F>"),
        (f"go {ENGLAND}!", f"go {ENGLAND}!"),
        ("line one\nline two\tend", "line one\nline two    end"),
        ("\u28ff\u2800\u28ff", "\u28ff\u2800\u28ff"),  # braille art needs its blank
        # Nor in turns: a joiner and a selector, again and again, hide bytes as a run does.
        ("hi\u200c\U000e0173\u200c\U000e0165!", "hi\u200c<U+E0173><U+200C><U+E0165>!"),
        ("ok\u200d\ufe0f\u200d\ufe0f", "ok\u200d<U+FE0F><U+200D><U+FE0F>"),
        # An emoji's selector then joiner stays; tag letters no flag has are escaped.
        ("\U0001f3f3\ufe0f\u200d\U0001f308", "\U0001f3f3\ufe0f\u200d\U0001f308"),
        ("\u2764\ufe0f\u200d\U0001f525", "\u2764\ufe0f\u200d\U0001f525"),
        (
            "\U0001f3f4\U000e0061\U000e0062\U000e0063\U000e007f",
            "\U0001f3f4<U+E0061><U+E0062><U+E0063><U+E007F>",
        ),
    ],
)
def test_a_message_shows_invisible_characters_but_keeps_what_scripts_need(
    text: str, shown: str
) -> None:
    assert printable(text, newlines=True) == shown


@pytest.mark.parametrize(
    ("left_s", "shown"),
    [
        (3 * 86400 - 5, "3 days"),  # a room made to last 3 days, just made (was "2 days")
        (2 * 3600 + 30 * 60, "3 h"),
        (2 * 3600 + 29 * 60, "2 h"),
        (40 * 60 - 10, "40 min"),
        (59, "59 s"),
    ],
)
def test_the_time_left_before_an_expiry_is_rounded_to_the_nearest_unit(
    left_s: int, shown: str
) -> None:
    now = 1_795_620_656_365
    expires = now + left_s * 1000
    assert expiry_text(expires, now, with_time=False) == f"expires in {shown}"
    if left_s >= 60:  # with the local time or date it expires at
        assert expiry_text(expires, now).endswith(f" (in {shown})")
    assert expiry_text(0, now) == "expiry not known yet"


@pytest.mark.parametrize("expires", [2**53 - 1, 2**63 - 1, 2**64 - 1, 253_402_300_800_000, 10**400])
def test_an_expiry_past_any_date_is_shown_as_far(expires: int) -> None:
    """A store or a relay can hold any number: one past the year 9999 made no date and
    crashed `join`, `rooms` and the chat."""
    now = 1_795_620_656_365
    for with_time in (True, False):
        assert expiry_text(expires, now, with_time=with_time) == "expires in more than 100 years"


@pytest.mark.parametrize(
    ("expires", "now", "shown"),
    [(2**53 - 1, 2**53 - 1 - 3 * 86_400_000, "expires in 3 days"), (-5, 0, "expires in 0 s")],
)
def test_an_expiry_that_is_no_date_is_shown_by_the_time_left(
    expires: int, now: int, shown: str
) -> None:
    """A clock read as far off as the expiry (no date either): the time left alone."""
    assert expiry_text(expires, now) == shown
    assert expiry_text(expires, now, with_time=False) == shown
