"""The full-screen chat: rooms on the side, the conversation, members, status, input.

    ChatApp(store, "alice", room="team").run()

Every room of the key store is joined at once. Rooms of one relay share one
``RoomClient`` (one connection), which signs with the store's device key; its events
drive the screen. The input line sends to the room shown, or runs a command (``/help``).

What deletes (``/leave``, ``/delete``, ``/clear``, ``/history off``, ``/wipe``, a room
expiring) is written to the key store at once; what adds (kept history, an expiry the
relay told) is written within a second, by the tick that also deletes expired rooms.

A session's replay filter starts empty, so each room's is told, as the room is joined,
the messages this device already has: its kept history, and the messages received, sent
or deleted within the last hour (kept as ids and times in the store, history kept or
not). A relay that sends those again after a restart is not believed (PROTOCOL.md 7).
Those ids alone do not make the store be written at once: within ``IDS_SAVED_WITHIN``
seconds, with the next other change, or at quitting.

A message sent is kept in the store, sealed, until the relay takes it, whether the room
keeps history or not: quit before then, and the next chat sends it again, byte for byte
(PROTOCOL.md 10.6), and shows it as waiting until it is taken.

Everything a member sent (names, text) is shown as plain text, never as markup, with
control and bidirectional-override characters replaced (a member cannot draw on the
screen or reorder it), and a message's further lines are indented under it.

The chat announces itself in its rooms (PROTOCOL.md 5.7), and the members line shows who
is online: the relay's count, the names and fingerprints the others announced (a name
known with another key, or mixing look-alike scripts, marked ⚠ and warned of in the
conversation as a message under it would be), and how many of those counted said nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import signal
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Self, TypeVar

import segno
from rich.cells import get_character_cell_size
from rich.segment import Segments
from rich.text import Text
from rich.traceback import Traceback
from textual import constants as textual_constants
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.expand_tabs import expand_tabs_inline
from textual.geometry import Size, clamp
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, ListItem, ListView, RichLog, Static

from instantroom.client.connection import (
    CLOCK_WARNING_MS,
    JoinRefused,
    RelayRefused,
    RoomClient,
    RoomGone,
    now_ms,
    relay_expiry_now,
    websocket_url,
)
from instantroom.client.invite import format_invite
from instantroom.client.keystore import (
    IDS_SAVED_WITHIN,
    DamagedStore,
    HistoryEntry,
    KeyStore,
    PasswordChanged,
    StoreChanged,
    StoredRoom,
    WrongPassword,
)
from instantroom.display import (
    clock_warning,
    dropped_ahead_warning,
    expiry_text,
    printable,
    shown_server,
)
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.envelope import Kind, open_envelope
from instantroom.protocol.errors import EnvelopeError, UsageError
from instantroom.protocol.kdf import RoomKeys
from instantroom.protocol.minikey import format_minikey, spell_minikey
from instantroom.protocol.names import canonical_name, mixed_scripts, spoken_list
from instantroom.protocol.roster import Member
from instantroom.protocol.session import (
    MAX_NAMES_PER_ROOM,
    Accepted,
    Event,
    Joined,
    MembersChanged,
    MessageReceived,
    MessageRejected,
    NotSent,
    PresenceChanged,
    Refused,
    RoomExpired,
)
from instantroom.rooms_cli import check_name

# At most 56 columns: the conversation's width in an 80-column terminal, beside the
# list of rooms (a quarter, and a border) and its scroll bar, so that no line wraps there.
HELP = """\
Commands:
  /key          the room key, spelled out, and its link
  /qr           the invite link as a QR code, for phones
  /leave        leave the room, and delete its key and
                messages from this device
  /delete N     delete message N (the number before it)
                here and from kept history
  /clear        delete kept history, clear the screen
  /history on   keep this room's messages (encrypted)
  /history off  stop keeping them, delete those kept
  /wipe         delete every room and message from this
                device, then quit
  /password     give the key store's new password, once
                another program changed it (this chat
                saves nothing until then)
  /help         this list
Enter sends what you typed to the room shown; // sends a
line that starts with /. A pasted text goes whole, its
line breaks shown as \u23ce. Ctrl+Up and Ctrl+Down (or
Alt+Up and Alt+Down) change rooms; Page Up and Page Down
scroll; Ctrl+Q quits."""

# Why one of ours kept as not taken, and no longer waiting, was not sent.
NEVER_TAKEN = "the relay never took it"
# Members named on the members line, at most: it shows four rows, and what follows the
# names (how many said nothing, ourselves) must not be cut off by a big room.
MEMBERS_SHOWN = 20
# Lines a room keeps (messages, and notes from us), the oldest dropped: as many as the web
# client keeps messages (MAX_LIVE_MESSAGES). What a relay or a member sends, by the
# thousand, must not grow the chat without bound.
MAX_LINES_PER_ROOM = 1000
# Rows the conversation keeps as drawn (a line can take several): it is drawn again from
# the room's lines when another room is shown, or the terminal resized.
MAX_CONVERSATION_ROWS = 20 * MAX_LINES_PER_ROOM
# How long the chat handles events in a row (seconds) before the screen, the keys and the
# relay's reader have their turn: a relay can send events faster than they are handled,
# and those queued up come without a wait. Not a count: the reader adds a whole read of
# frames in its turn, and the chat must take as many in its own, or the bounded queue
# drops the oldest (a message among them).
EVENTS_TURN = 0.02

W = TypeVar("W", bound=Widget)
K = TypeVar("K")

LineKind = Literal["message", "notice", "warning", "error", "code"]

_NAME_COLOURS = ("cyan", "green", "magenta", "yellow", "bright_blue", "bright_red", "orange1")


def clock(timestamp_ms: int) -> str:
    """``timestamp_ms`` as a local time; "--:--" for a time that is no date (a stored one
    can be any number)."""
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000).astimezone().strftime("%H:%M")
    except (ValueError, OverflowError, OSError):
        return "--:--"


def name_colour(fingerprint: str) -> str:
    return _NAME_COLOURS[zlib.crc32(fingerprint.encode("ascii")) % len(_NAME_COLOURS)]


@functools.lru_cache(maxsize=MAX_NAMES_PER_ROOM)
def scripts_of(name: str) -> tuple[str, ...]:
    """The look-alike scripts ``name`` mixes (PROTOCOL.md 4.4); asked for each line drawn."""
    return tuple(mixed_scripts(name))


def item_id(room_id: bytes) -> str:
    return f"room-{room_id.hex()}"


def remember(bounded: dict[K, None], key: K) -> K | None:
    """Add ``key`` to ``bounded``, an ordered set of at most ``MAX_NAMES_PER_ROOM`` (added
    again, it is the most recent); the least recently added one it dropped, if any."""
    bounded.pop(key, None)
    bounded[key] = None
    if len(bounded) <= MAX_NAMES_PER_ROOM:
        return None
    dropped = next(iter(bounded))
    del bounded[dropped]
    return dropped


# How a line break of a pasted text shows in the input line (one cell, as the break is one
# character: the cursor's place stays right).
SHOWN_BREAK = "\u23ce"


class PasswordScreen(ModalScreen[bool]):
    """Asks for the key store's new password, changed by another program while this chat
    was open. ``take`` tries one: None once it opens the store, else why not. Dismissed
    with True once taken, False on Escape (the chat then saves nothing, as before)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "give_up", "Cancel")]

    def __init__(self, take: Callable[[str], Awaitable[str | None]]) -> None:
        super().__init__()
        self._take = take
        self._trying = False
        self._offered: str | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="password-box"):
            yield Static(
                "Another InstantRoom changed the key store's password. Type the new one, "
                "and this chat saves again. Escape: it saves nothing (quit it and open it "
                "again to go on).",
                markup=False,
            )
            yield Input(password=True, id="password-input", placeholder="the new password")
            yield Static("", id="password-problem", markup=False)

    def on_mount(self) -> None:
        self.query_one("#password-input", Input).focus()
        if self._offered is not None:
            offered, self._offered = self._offered, None
            self._submit(offered)

    def offer(self, password: str) -> None:
        """Try what was entered in the chat's input line while this was being put up (keys
        typed fast, or a paste, came before it showed): it is never sent."""
        if self.is_mounted:
            self._submit(password)
        else:
            self._offered = password

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()  # a password is never the chat's to send
        self._submit(event.value)

    def _submit(self, password: str) -> None:
        if self._trying or not password:
            return
        self._trying = True
        self.run_worker(self._try(password), exclusive=True)

    async def _try(self, password: str) -> None:
        problem = await self._take(password)
        self._trying = False
        if problem is None:
            self.dismiss(True)
            return
        self.query_one("#password-input", Input).value = ""
        self.query_one("#password-problem", Static).update(problem)

    def action_give_up(self) -> None:
        self.dismiss(False)


class MessageInput(Input):
    """The input line, which takes a pasted text whole. Textual's Input keeps the first line
    of a paste and drops the others without a word: a pasted paragraph went out as its
    first line. Its line breaks are kept, shown as ⏎, and sent.

    Enter submits what was typed before it, and empties the line, there and then: Input
    submits once the key has gone round the app, and the keys typed meanwhile (fast, or
    as a terminal without bracketed paste sends a pasted text) were sent with it, twice,
    then cleared away unsent."""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.prevent_default()  # Input's own handler, and its binding, would submit later
            event.stop()
            await self.action_submit()

    async def action_submit(self) -> None:
        value, self.value = self.value, ""
        chat = self.app
        if isinstance(chat, ChatApp) and chat.took_as_password(value):
            return  # there and then: the keys typed next go to the question, not the room
        self.post_message(self.Submitted(self, value))

    def _on_paste(self, event: events.Paste) -> None:
        event.prevent_default()  # Input's own handler would insert the first line again
        event.stop()
        # A terminal's paste ends lines with \r, or \r\n; a line copied whole ends with one.
        text = event.text.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
        if not text:
            return
        if self.selection.is_empty:
            self.insert_text_at_cursor(text)
        else:
            self.replace(text, *self.selection)

    @property
    def _value(self) -> Text:
        return Text(self.value.replace("\n", SHOWN_BREAK), no_wrap=True, overflow="ignore", end="")

    def _position_to_cell(self, position: int) -> int:
        shown = self.value[:position].replace("\n", SHOWN_BREAK)
        return Text(expand_tabs_inline(shown, 4)).cell_len

    def _cell_offset_to_index(self, offset: int) -> int:
        offset += self.scroll_offset.x
        cell = 0
        for index, char in enumerate(self.value.replace("\n", SHOWN_BREAK)):
            width = get_character_cell_size(char)
            if cell <= offset < cell + width:
                return index
            cell += width
        return clamp(offset, 0, len(self.value))


class Conversation(RichLog):
    """The conversation. A RichLog keeps its lines as drawn for the width it had: they are
    drawn again for a new width (a resized terminal), else they would be cut at its edge.

    It follows new lines while it shows the end, and stays where it is while one reads
    back: a message arriving, or an ACK redrawing the lines, no longer jumps to the end.
    """

    class Resized(Message):
        """The conversation's width changed."""

    _drawn_width = 0
    # Kept apart from the scroll position: a line just written is below the end until
    # the scroll to it is done, and one more line then must still follow.
    following = True

    def on_resize(self, event: events.Resize) -> None:
        if self._drawn_width and event.size.width != self._drawn_width:
            self.post_message(self.Resized())
        self._drawn_width = event.size.width

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if not self._redrawing:
            self.following = round(new_value) >= self.max_scroll_y

    _redrawing = False

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Where the lines written with a key are: key -> (their first row, counted as
        # RichLog counts the rows it dropped, and how many rows), so that an ACK draws
        # that line again, not the whole conversation (a second with a thousand lines).
        self._placed: dict[str, tuple[int, int]] = {}

    def add(self, line: Text, key: str = "") -> None:
        """Write ``line`` at the end (``key``: to ``replace`` it later); scroll to it only
        if following."""
        self._write(line, key, scroll_end=self.following)

    def _write(self, line: Text, key: str, *, scroll_end: bool) -> None:
        first = self._start_line + len(self.lines)
        placed = self._size_known and not self._deferred_renders  # else written later
        self.write(line, scroll_end=scroll_end)
        if key and placed:
            self._placed[key] = (first, self._start_line + len(self.lines) - first)

    def replace(self, key: str, line: Text) -> bool:
        """Draw the line written with ``key`` again, as ``line``, in its place, if it
        still takes as many rows; say whether it did (else draw them all again)."""
        placed = self._placed.pop(key, None)
        if placed is None:
            return False
        first, rows = placed
        at, end = first - self._start_line, len(self.lines)
        if at < 0 or at + rows > end:
            return False  # dropped from the top meanwhile
        # Drawn as ``write`` draws (the width, the wrapping), at the end, then moved.
        max_lines, self.max_lines = self.max_lines, None  # which would drop rows from the top
        try:
            self.write(line, scroll_end=False)
        finally:
            self.max_lines = max_lines
        drawn = self.lines[end:]
        del self.lines[end:]
        self.virtual_size = Size(self._widest_line_width, len(self.lines))
        if len(drawn) != rows:
            return False
        self.lines[at : at + rows] = drawn
        self._placed[key] = placed
        self._line_cache.clear()
        self.refresh()
        return True

    def clear(self) -> Self:
        self._placed.clear()
        return super().clear()

    def show(self, lines: Iterable[tuple[Text, str]]) -> None:
        """Draw ``lines`` (each with its key, or "") instead of what is shown, at the same
        place if one reads back."""
        following, where = self.following, self.scroll_y
        self._redrawing = True  # clearing scrolls to the top: not the reader's doing
        try:
            self.clear()
            for line, key in lines:
                self._write(line, key, scroll_end=following)
        finally:
            self._redrawing = False
        if not following:
            self.scroll_to(y=where, animate=False, immediate=True)


@dataclass(repr=False)  # no text or name in a repr: a traceback or a log may show it
class Line:
    """One entry of a conversation: a message (numbered on screen) or a note from us."""

    kind: LineKind
    text: str
    timestamp_ms: int = 0
    name: str = ""
    fingerprint: str = ""
    own: bool = False
    entry: HistoryEntry | None = None  # its kept copy in the store, if any
    failed: str = ""  # one of ours the relay never took: why
    waiting: bool = False  # one of ours the relay has not taken yet
    message_id: str = ""  # hex
    # Its number on screen, for /delete: deleting one leaves the others with the numbers
    # the user read (deleting "3, then 5" deletes those two). Only a message put above
    # others by its timestamp (RoomView.add) moves their numbers, up by one.
    number: int = 0

    def __repr__(self) -> str:
        return f"Line(kind={self.kind!r}, number={self.number}, own={self.own})"


@dataclass(eq=False, repr=False)  # no names in a repr
class MembersLine:
    """What a room's members line shows, kept between redraws: worked out again only when
    the roster, the relay's count, or what the room knows of a name in the roster changed,
    so that an event costs no more with a thousand members than with two."""

    roster: tuple[Member, ...] = ()  # the roster it is of (that very tuple)
    # Each member of it -> its canonical name, and whether it is marked ⚠ by itself (the
    # session said its key is new, or it mixes look-alike scripts): each worked out once.
    marks: dict[Member, tuple[str, bool]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # the canonical names in the roster
    # The members named on the line (those marked ⚠ first), and how many more there are;
    # None: to be chosen again.
    named: Text | None = None
    online: int | None = None
    text: Text | None = None  # the line for ``named`` and ``online``; None: to be made

    def mark(self, member: Member) -> tuple[str, bool]:
        """``member``'s canonical name, and whether it is marked ⚠ by itself."""
        mark = self.marks.get(member)
        if mark is None:
            marked = member.key_changed or bool(scripts_of(member.name))
            mark = (canonical_name(member.name), marked)
        return mark

    def take(self, roster: tuple[Member, ...]) -> None:
        """Be of ``roster`` (the members' marks known are kept)."""
        if roster is self.roster:
            return
        self.marks = {member: self.mark(member) for member in roster}
        self.names = {name for name, _ in self.marks.values()}
        self.roster, self.named, self.text = roster, None, None

    def touched(self, key: str) -> None:
        """What the room knows of the canonical name ``key`` changed (it came with a new
        key, or another fingerprint was seen with it): chosen again if a member has it."""
        if key in self.names:
            self.named = self.text = None


@dataclass(repr=False)  # no message, name or key in a repr
class RoomView:
    """What the screen knows of one stored room."""

    stored: StoredRoom
    keys: RoomKeys
    client: RoomClient | None = None
    lines: list[Line] = field(default_factory=list)
    # canonical name (PROTOCOL.md 4.4) -> (the name as last sent, its latest fingerprint),
    # least recently seen first, at most MAX_NAMES_PER_ROOM: from messages (kept history
    # too) and ourselves, to tell a name that comes with another key than before
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Canonical names that came with a new key (an ordered set), at most MAX_NAMES_PER_ROOM,
    # the least recently added dropped.
    changed: dict[str, None] = field(default_factory=dict)
    # canonical name -> the fingerprint last warned of as its new key, as long as no
    # message under the name came from another key since: a member announced with a new
    # key, then writing, is warned of once. At most MAX_NAMES_PER_ROOM.
    key_warned: dict[str, str] = field(default_factory=dict)
    # (canonical name, fingerprint) of the members announced with a new key and warned of:
    # once each, however often the roster changes. At most MAX_NAMES_PER_ROOM.
    announced_warned: dict[tuple[str, str], None] = field(default_factory=dict)
    # Who the others said they are (PROTOCOL.md 5.7), oldest first: the session's roster.
    roster: tuple[Member, ...] = ()
    members_line: MembersLine = field(default_factory=MembersLine, repr=False)
    # Canonical names warned of as mixing scripts (an ordered set), at most
    # MAX_NAMES_PER_ROOM, the least recently added dropped.
    flagged: dict[str, None] = field(default_factory=dict)
    numbered: int = 0  # the highest number given to a message line
    clock_warning: str | None = None  # what the room was last told of this computer's clock
    dropped_ahead_at: float = -math.inf  # when a message dated ahead was last said dropped

    def add(self, line: Line) -> bool:
        """Add ``line``, numbering it if it is a message; the oldest dropped past
        MAX_LINES_PER_ROOM. Say whether it went at the end (else the screen must be
        drawn again).

        Messages are shown in the order of their timestamps (PROTOCOL.md 10.4), as a
        room's are when its history is loaded: one sent before those shown last, but
        arriving after them (a backlog whose refused PUBLISHes went again, PROTOCOL.md
        10.6), goes before them. Only among the messages since the last note: a note
        (a warning of the message under it, an error, a command's answer) stays where it
        was said, and no message goes above it. The numbers below it go up by one, so
        that they read in order from top to bottom, as /delete takes them."""
        at = len(self.lines)
        if line.kind == "message":
            while (
                at
                and self.lines[at - 1].kind == "message"
                and self.lines[at - 1].timestamp_ms > line.timestamp_ms  # stable
            ):
                at -= 1
            self.numbered += 1
            if at == len(self.lines):
                line.number = self.numbered
            else:
                line.number = self.lines[at].number
                for later in self.lines[at:]:  # messages all (passed over above)
                    later.number += 1
        at_end = at == len(self.lines)
        self.lines.insert(at, line)
        if len(self.lines) > MAX_LINES_PER_ROOM:
            del self.lines[: len(self.lines) - MAX_LINES_PER_ROOM]
        return at_end

    def saw(self, name: str, fingerprint: str) -> str | None:
        """Remember ``name`` with ``fingerprint``; the fingerprint it had before, if any."""
        key = canonical_name(name)
        before = self.seen.pop(key, None)
        self.seen[key] = (name, fingerprint)
        if before is None or before[1] != fingerprint:
            self.members_line.touched(key)
        if len(self.seen) > MAX_NAMES_PER_ROOM:
            dropped = next(iter(self.seen))
            del self.seen[dropped]
            self.members_line.touched(dropped)
        return before[1] if before is not None else None

    def key_changed(self, key: str) -> None:
        """The canonical name ``key`` came with a new key."""
        if key not in self.changed:
            self.members_line.touched(key)
        dropped = remember(self.changed, key)
        if dropped is not None:
            self.members_line.touched(dropped)

    online: int | None = None
    unread: int = 0
    no_place: bool = False  # the relay said the room (or it) is full: not in the room yet
    refused: str = ""  # why the relay refused the room for good (till the next chat)
    # The codes of the refusals said in this room since it was last joined: each is said
    # once (a relay can send the same ERROR by the thousand).
    refusals_said: set[int] = field(default_factory=set)

    @property
    def room_id(self) -> bytes:
        return self.keys.room_id

    @property
    def sending(self) -> int:
        """How many of ours the relay has not taken yet."""
        return len(self.stored.outbox)


class ChatApp(App[None]):
    """The chat screen over every room of ``store``, as ``name``; ``room`` is shown first:
    a label or the start of a room id (``KeyStore.find``), or a room id as bytes."""

    CSS_PATH = "app.tcss"
    TITLE = "InstantRoom"
    AUTO_FOCUS = "#input"
    # Below this many columns the rooms' list is hidden (app.tcss).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (60, "-wide")]  # noqa: RUF012 (as App has it)
    # Below this many rows the members and status lines take one row each (app.tcss).
    VERTICAL_BREAKPOINTS = [(0, "-short"), (16, "-tall")]  # noqa: RUF012 (as App has it)
    # Its Screenshot command writes what is on screen (a room key, /key; the messages) to
    # an SVG file in ~/Downloads, readable by all; nor does the chat need its other ones.
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+up", "previous_room", "Previous room"),
        Binding("ctrl+down", "next_room", "Next room"),
        # For terminals that keep Ctrl+arrows for themselves (macOS: Mission Control).
        Binding("alt+up", "previous_room", "Previous room", show=False),
        Binding("alt+down", "next_room", "Next room", show=False),
        # The input line has the focus, and takes no page keys: they scroll what was said.
        Binding("pageup", "page_conversation(-1)", "Scroll up", show=False),
        Binding("pagedown", "page_conversation(1)", "Scroll down", show=False),
    ]

    def __init__(self, store: KeyStore, name: str, room: str | bytes | None = None) -> None:
        check_name(name)
        # TEXTUAL_LOG in the environment names a file Textual appends every event to, what
        # is typed included, readable by all: Textual reads this at each line it logs.
        setattr(textual_constants, "LOG_FILE", None)  # noqa: B010 (Final to mypy)
        super().__init__()
        # TEXTUAL=devtools in the environment, with textual_dev installed, streams every
        # log line and print, keystrokes included, to a console listening on this host.
        self.features = self.features - {"devtools"}
        self.devtools = None
        self._devtools_redirector = None
        self._store = store
        self._user = name
        self._fingerprint = store.device.fingerprint
        # The store comes purged (rooms_cli.open_store: each room by its relay's reading of
        # this clock): purged here again by this clock alone, a clock days fast would
        # delete what its relays kept. What is over yet goes at the first tick (_tick).
        self._dirty = False
        self._ids_unsaved_since: float | None = None  # monotonic time of the first
        self._save_problem: str | None = None  # why the last write failed, said once
        self._saving_stopped = False
        self._password_changed = False  # by another program: /password gives the new one
        self._password_screen: PasswordScreen | None = None
        self._adopting = threading.Lock()  # held while a new password is taken (a thread)
        self._wipe_armed = False
        # The room a first /leave asked about: the next /leave there leaves it.
        self._leave_armed: bytes | None = None
        self._quit_armed = False
        self._redraw_pending = False
        self._refresh_pending = False
        self._selected: bytes | None = None
        if isinstance(room, bytes):
            if any(stored.room_id == room for stored in store.rooms):
                self._selected = room
        elif room is not None:
            self._selected = store.find(room).room_id
        self._views: dict[bytes, RoomView] = {}
        for stored in store.rooms:
            view = self._view_of(stored)  # may drop what is not ours to send: _dirty
            self._views[view.room_id] = view
        if self._selected is None and self._views:
            self._selected = next(iter(self._views))
        self._clients: dict[str, RoomClient] = {}  # by WebSocket URL
        self._ever_connected: set[str] = set()
        self._failures: dict[str, str] = {}
        self._own_ids: set[bytes] = set()
        self._members_shown: Text | None = None  # the members line on the screen

    def _view_of(self, stored: StoredRoom) -> RoomView:
        view = RoomView(stored, RoomKeys.from_minikey(stored.key))
        waiting = {entry.message_id for entry in stored.outbox}
        for entry in stored.history:
            view.add(
                Line(
                    "message",
                    entry.text,
                    timestamp_ms=entry.timestamp_ms,
                    name=entry.name,
                    fingerprint=entry.fingerprint,
                    own=entry.fingerprint == self._fingerprint,
                    entry=entry,
                    message_id=entry.message_id,
                    waiting=entry.message_id in waiting,
                    failed="" if entry.sent or entry.message_id in waiting else NEVER_TAKEN,
                )
            )
            view.saw(entry.name, entry.fingerprint)
        view.seen.setdefault(canonical_name(self._user), (self._user, self._fingerprint))
        self._show_waiting(view)
        for name, fingerprint in list(view.seen.values()):  # kept history's names, last
            if fingerprint != self._fingerprint:
                self._flag_mixed_scripts(view, name, fingerprint, shown=False)
        return view

    def _show_waiting(self, view: RoomView) -> None:
        """Show ours still waiting for the relay that kept history does not show (it is
        off, or was turned on after): opened from their sealed copy, which also checks it.
        One that does not open is not ours to send, and is dropped."""
        shown = {line.message_id for line in view.lines} | {
            entry.message_id for entry in view.stored.deleted
        }
        for outgoing in list(view.stored.outbox):
            if outgoing.message_id in shown:
                continue
            try:
                message = open_envelope(view.keys, outgoing.restorable()[2])
            except EnvelopeError:
                message = None
            if (
                message is None
                or message.message_id.hex() != outgoing.message_id
                or message.timestamp_ms != outgoing.timestamp_ms
                or message.sender_key != self._store.device.public_key
            ):
                view.stored.outbox.remove(outgoing)
                self._dirty = True
                continue
            if message.kind == Kind.TEXT:
                view.add(
                    Line(
                        "message",
                        message.body.decode("utf-8", errors="replace"),
                        timestamp_ms=message.timestamp_ms,
                        name=message.sender_name,
                        fingerprint=self._fingerprint,
                        own=True,
                        message_id=outgoing.message_id,
                        waiting=True,
                    )
                )
        view.lines.sort(key=lambda line: line.timestamp_ms)  # stable: notes have none yet
        # Numbered again as they now read (nothing is on screen yet): the waiting ones got
        # numbers after the kept ones, and may have moved before them.
        view.numbered = 0
        for line in view.lines:
            if line.kind == "message":
                view.numbered += 1
                line.number = view.numbered

    # layout

    def compose(self) -> ComposeResult:
        order = list(self._views)
        initial = order.index(self._selected) if self._selected in self._views else None
        with Horizontal():
            yield ListView(
                *(self._room_item(view) for view in self._views.values()),
                id="rooms",
                initial_index=initial,
            )
            with Vertical(id="main"):
                yield Conversation(
                    id="conversation", wrap=True, min_width=20, max_lines=MAX_CONVERSATION_ROWS
                )
                yield Static(id="members")
                yield Static(id="status")
                yield MessageInput(placeholder="Write a message; /help for commands", id="input")

    def _room_item(self, view: RoomView) -> ListItem:
        label = Static(self._room_label(view), classes="room-label")
        return ListItem(label, id=item_id(view.room_id))

    @staticmethod
    def _expiry_now(view: RoomView) -> int:
        """The time the room expires by: by its relay's reading of this clock, once told."""
        client = view.client
        return client.expiry_now() if client is not None else relay_expiry_now(view.stored.server)

    def _room_label(self, view: RoomView) -> Text:
        label = Text(printable(view.stored.label), style="bold", no_wrap=True, overflow="ellipsis")
        label.append(
            "\n" + expiry_text(view.stored.expires_at_ms, self._expiry_now(view), with_time=False),
            style="dim",
        )
        if view.unread:
            label.append(f"  {view.unread} new", style="bold")
        return label

    def _widget(self, selector: str, kind: type[W]) -> W | None:
        """The widget, or None once the screen is being taken down: a timer or an event
        can still come as the chat quits, and must not crash it then."""
        return next(iter(self.query(selector).results(kind)), None)

    def _current(self) -> RoomView | None:
        return self._views.get(self._selected) if self._selected is not None else None

    def save_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str:
        """Write nothing: Textual's screenshots (TEXTUAL_SCREENSHOT in the environment, or a
        screenshot action) would put a room key and the messages in a file readable by all."""
        return ""

    def deliver_screenshot(
        self, filename: str | None = None, path: str | None = None, time_format: str | None = None
    ) -> str | None:
        return None

    async def on_mount(self) -> None:
        # A closed terminal (SIGHUP) or a service manager (SIGTERM) quits as Ctrl+Q does,
        # writing first what is not saved yet (ours not sent, ids received lately): their
        # default ends the process on the spot. One the process was told to ignore stays so.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGHUP, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
                    loop.add_signal_handler(signum, self.exit, None, 128 + signum)
        for view in self._views.values():
            self._connect(view)
        self._show_conversation()
        self._refresh_panels()
        self.set_interval(1.0, self._tick)

    async def on_unmount(self) -> None:
        with self._adopting:  # a new password being taken (quit meanwhile): then saved by it
            pass
        if self._dirty or self._ids_unsaved_since is not None:
            self._save()
        for client in self._clients.values():
            await client.close()

    # the relays

    def _connect(self, view: RoomView) -> None:
        try:
            url = websocket_url(view.stored.server)
        except UsageError as exc:
            self._add_line(view, Line("error", f"{exc} This room's server cannot be reached."))
            return
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = RoomClient(
                view.stored.server, self._store.device, self._user, announce=True
            )
            client.start()
            self.run_worker(self._listen(client), group="events")
        view.client = client
        self.run_worker(self._join(view, client), group="joins")

    async def _join(self, view: RoomView, client: RoomClient) -> None:
        # What this device has had is not taken again (PROTOCOL.md 7): pruned first, as a
        # write would, for the clock may have been set back since the last one, leaving a
        # floor further ahead than a message may be stamped (it would refuse them all).
        view.stored.prune_known(now_ms())
        known = view.stored.known()
        # Ours the relay had not taken when the last chat quit go again (PROTOCOL.md 10.6).
        outbox = [outgoing.restorable() for outgoing in view.stored.outbox]
        try:
            await client.join(
                view.keys, view.stored.expires_at_ms, known, outbox, view.stored.recent_floor_ms
            )
        except RelayRefused as exc:
            self._failures[client.url] = printable(str(exc))
            self._add_line(view, Line("error", printable(str(exc))))
            self._refresh_panels()
        except (JoinRefused, RoomGone):
            pass  # the Refused or RoomExpired event says it

    async def _listen(self, client: RoomClient) -> None:
        try:
            turn_began = time.monotonic()
            while True:
                event = await client.next_event()
                await self._on_event(client, event)
                if time.monotonic() - turn_began >= EVENTS_TURN:
                    # Events queued up return at once: without a turn for the screen and
                    # the keys, a flood of them froze the chat till it was handled.
                    await asyncio.sleep(0)
                    turn_began = time.monotonic()
        except RelayRefused:
            self._refresh_panels()  # refused for good: the status line says why
        except RoomGone:
            pass  # the client was closed: the app is closing

    async def _on_event(self, client: RoomClient, event: Event) -> None:
        match event:
            case MessageReceived(room_id=room_id):
                if (view := self._views.get(room_id)) is not None:
                    self._received(view, event)
            case Joined(room_id=room_id, expires_at_ms=expires, members=members):
                self._ever_connected.add(client.url)
                if (view := self._views.get(room_id)) is not None:
                    view.online, view.no_place = members, False
                    view.refusals_said.clear()  # said again if they come again
                    # Said in each room once, and again only after it was set right.
                    warning = clock_warning(client.clock_offset_ms, CLOCK_WARNING_MS)
                    if warning is not None and view.clock_warning is None:
                        self._add_line(view, Line("warning", f"⚠ {warning}"))
                    view.clock_warning = warning
                    known = [t for t in (view.stored.expires_at_ms, expires) if t]
                    if min(known, default=0) != view.stored.expires_at_ms:
                        view.stored.expires_at_ms = min(known)
                        self._dirty = True
            case PresenceChanged(room_id=room_id, members=members):
                if (view := self._views.get(room_id)) is not None:
                    view.online = members
            case MembersChanged(room_id=room_id, members=roster):
                if (view := self._views.get(room_id)) is not None:
                    self._members_changed(view, roster)
            case MessageRejected(room_id=room_id, ahead_ms=ahead_ms) if ahead_ms:
                # A clock set wrong, the sender's or ours: said, at most every 10 minutes
                # (a relay could send such a message by the thousand).
                view = self._views.get(room_id)
                if view is not None and time.monotonic() - view.dropped_ahead_at > 600:
                    view.dropped_ahead_at = time.monotonic()
                    self._add_line(view, Line("warning", f"⚠ {dropped_ahead_warning(ahead_ms)}"))
            case Accepted(room_id=room_id, message_id=message_id):
                if (view := self._views.get(room_id)) is not None:
                    self._taken(view, message_id, "")
            case NotSent(room_id=room_id, message_id=message_id, reason=reason):
                if (view := self._views.get(room_id)) is not None:
                    self._taken(view, message_id, printable(reason))
            case RoomExpired(room_id=room_id):
                if (view := self._views.get(room_id)) is not None:
                    self._store.forget(view.stored)
                    await self._remove_view(view, "has expired", saved=self._save())
            case Refused(code=code, ref=ref, room_id=room_id, reason=reason):
                view = self._views.get(room_id)
                if code == ErrorCode.RATE_LIMITED or view is None:
                    pass
                elif not ref and code in (ErrorCode.ROOM_FULL, ErrorCode.RELAY_FULL):
                    # The client asks again every 15 s: said once till the room is
                    # joined, not once a try (nor once a reason the relay varies).
                    view.no_place = True
                    if code not in view.refusals_said:
                        view.refusals_said.add(code)
                        said = f"No place for us now: {printable(reason)} Trying again."
                        self._add_line(view, Line("notice", said))
                else:
                    if view.client is client and room_id not in client.session.rooms:
                        # The client gave the room up: nothing goes to it in this chat.
                        view.refused = printable(reason)
                    # Each refusal once till the room is joined again: the relay may send
                    # it by the thousand, with another reason each time.
                    if code not in view.refusals_said:
                        view.refusals_said.add(code)
                        self._add_line(
                            view, Line("error", f"The relay refused: {printable(reason)}")
                        )
            case _:
                pass
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        """Refresh the panels once for all the events handled till the chat's next turn
        (``_listen`` gives it one at least every EVENTS_TURN): a refresh takes far
        longer than most events, and a relay can send a flood of them (PRESENCE)."""
        if not self._refresh_pending:
            self._refresh_pending = self.call_later(self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh_pending = False
        self._refresh_panels()

    def _taken(self, view: RoomView, message_id: bytes, failed: str) -> None:
        """The relay took one of ours, or (``failed`` says why) it was given up."""
        if view.stored.remove_outgoing(message_id):
            self._dirty = True
        hex_id = message_id.hex()
        for line in view.lines:
            if line.message_id == hex_id and line.own:
                shown_before = (line.waiting, line.failed)
                line.waiting, line.failed = False, failed
                if line.entry is not None and not failed:
                    line.entry.sent = True
                    self._dirty = True
                if view.room_id != self._selected or shown_before == (False, failed):
                    continue
                # That one line drawn again: the whole conversation took a second.
                log = self._widget("#conversation", Conversation)
                if log is not None and not log.replace(hex_id, self._render_line(line)):
                    self._redraw_soon()

    def _redraw_soon(self) -> None:
        """Draw the conversation again, once for all that changed in the next 0.2 s: a
        long one takes a while, and ACKs come in bursts."""
        if not self._redraw_pending:
            self._redraw_pending = True
            self.set_timer(0.2, self._redraw)

    def _redraw(self) -> None:
        self._redraw_pending = False
        self._show_conversation()

    def _flag_mixed_scripts(
        self, view: RoomView, name: str, fingerprint: str, *, shown: bool = True
    ) -> None:
        """Warn, once per name and room, of a name that mixes look-alike scripts (on the
        screen too if ``shown``: not while the view is being made)."""
        scripts = scripts_of(name)
        if scripts and canonical_name(name) not in view.flagged:
            remember(view.flagged, canonical_name(name))
            warning = (
                f"⚠ The name {printable(name)} mixes {spoken_list(scripts)} letters: it may "
                f"imitate another name. Its device key is {fingerprint}: check it with them "
                "another way before you trust it."
            )
            if shown:
                self._add_line(view, Line("warning", warning))
            else:
                view.add(Line("warning", warning))

    def _received(self, view: RoomView, received: MessageReceived) -> None:
        message = received.message
        if message.kind != Kind.TEXT or message.message_id in self._own_ids:
            return
        view.stored.record_recent(message.message_id, message.timestamp_ms)
        self._ids_changed()
        name, fingerprint = message.sender_name, received.fingerprint
        before = view.saw(name, fingerprint)
        if received.key_changed or (before is not None and before != fingerprint):
            self._warn_of_new_key(view, name, fingerprint, before, "now writes")
        elif view.key_warned.get(canonical_name(name), fingerprint) != fingerprint:
            # Another key wrote under the name since its warning: the next is news again.
            del view.key_warned[canonical_name(name)]
        self._flag_mixed_scripts(view, name, fingerprint)
        entry = None
        if view.stored.keep_history:
            entry = HistoryEntry(
                message.message_id.hex(), message.timestamp_ms, name, fingerprint, message.text
            )
            view.stored.keep(entry)
            self._dirty = True
        line = Line("message", message.text, message.timestamp_ms, name, fingerprint, entry=entry)
        line.message_id = message.message_id.hex()
        self._add_line(view, line)
        if view.room_id != self._selected:
            view.unread += 1

    def _warn_of_new_key(
        self, view: RoomView, name: str, fingerprint: str, before: str | None, doing: str
    ) -> None:
        """Warn that ``name`` ``doing`` ("now writes") with a new device key, unless the
        last warning for the name was of this very key (announced, then writing)."""
        key = canonical_name(name)
        view.key_changed(key)
        if view.key_warned.get(key) == fingerprint:
            return
        view.key_warned.pop(key, None)  # now the most recent
        view.key_warned[key] = fingerprint
        if len(view.key_warned) > MAX_NAMES_PER_ROOM:
            del view.key_warned[next(iter(view.key_warned))]
        was = f" (before: {before})" if before and before != fingerprint else ""
        warning = (
            f"⚠ {printable(name)} {doing} with a NEW device key {fingerprint}{was}. "
            "It may be someone else using that name: check with them another way "
            "before you trust it."
        )
        self._add_line(view, Line("warning", warning))

    def _known_key(self, view: RoomView, name: str) -> str | None:
        """The fingerprint this chat last saw ``name`` write with (or ours, for our name)."""
        seen = view.seen.get(canonical_name(name))
        return seen[1] if seen is not None else None

    def _members_changed(self, view: RoomView, roster: tuple[Member, ...]) -> None:
        """The others' announcements changed who is named online. One who came (or took
        another name) under a name known with another key (to the session, or to this
        chat from kept history), or mixing look-alike scripts, is warned of as a message
        under it would be: a member can announce and never write, and the members line
        alone would show them as the one the name belongs to. A member already there
        whose flag changes is not: another key's message under the name made it, and
        was warned of."""
        there = {(member.device_key, member.name) for member in view.roster}
        view.roster = roster
        for member in roster:
            if (member.device_key, member.name) in there:
                continue  # flagged, or found not to need it, as it came
            self._flag_mixed_scripts(view, member.name, member.fingerprint)
            before = self._known_key(view, member.name)
            announced = (canonical_name(member.name), member.fingerprint)
            new_key = member.key_changed or (before is not None and before != member.fingerprint)
            if new_key and announced not in view.announced_warned:
                view.announced_warned[announced] = None
                if len(view.announced_warned) > MAX_NAMES_PER_ROOM:
                    del view.announced_warned[next(iter(view.announced_warned))]
                self._warn_of_new_key(
                    view, member.name, member.fingerprint, before, "is in the room"
                )

    def _suspect(self, view: RoomView, member: Member) -> bool:
        """Whether ``member`` is marked ⚠ on the members line: a name that came with a new
        key (now or before, this member's or another's: every member who claims it is
        marked), known here with another, or mixing look-alike scripts."""
        key, marked = view.members_line.mark(member)
        seen = view.seen.get(key)
        return marked or key in view.changed or (seen is not None and seen[1] != member.fingerprint)

    # the screen

    def _render_line(self, line: Line) -> Text:
        if line.kind == "code":
            return Text(line.text, no_wrap=True, overflow="ignore")
        if line.kind != "message":
            style = {"notice": "italic", "warning": "bold yellow", "error": "bold red"}
            return Text(line.text, style=style[line.kind])
        shown = Text()
        shown.append(f"{line.number:>3} ", style="dim")
        shown.append(f"{clock(line.timestamp_ms)} ", style="dim")
        shown.append(printable(line.name), style=f"bold {name_colour(line.fingerprint)}")
        if scripts_of(line.name):
            shown.append(" ⚠", style="bold yellow")
        shown.append(f" {line.fingerprint}", style="dim")
        if line.own:
            shown.append(" (you)", style="dim")
        shown.append("  ")
        shown.append(printable(line.text, newlines=True).replace("\n", "\n" + " " * 10))
        if line.failed:
            shown.append(f"  (not sent: {line.failed})", style="bold red")
        elif line.waiting:
            shown.append("  (waiting to send)", style="dim")
        return shown

    def _add_line(self, view: RoomView, line: Line) -> None:
        at_end = view.add(line)
        log = self._widget("#conversation", Conversation)
        if view.room_id == self._selected and log is not None:
            if at_end:
                log.add(self._render_line(line), self._key_of(line))
            else:  # put in its place, and those below renumbered: drawn again
                self._redraw_soon()

    def _note(self, view: RoomView | None, text: str, kind: LineKind = "notice") -> None:
        if view is not None:
            self._add_line(view, Line(kind, text))
        elif (log := self._widget("#conversation", Conversation)) is not None:
            log.add(self._render_line(Line(kind, text)))

    def _show_conversation(self) -> None:
        log = self._widget("#conversation", Conversation)
        if log is None:
            return
        view = self._current()
        if view is None:
            log.following = True
            log.show(
                [
                    (
                        Text(
                            "No rooms here. Make one with `instantroom new`, or join one "
                            "with `instantroom join KEY`, then come back.",
                            style="italic",
                        ),
                        "",
                    )
                ]
            )
            return
        log.show((self._render_line(line), self._key_of(line)) for line in view.lines)

    @staticmethod
    def _key_of(line: Line) -> str:
        """The key ``line`` is drawn with: ours are drawn again in place when taken."""
        return line.message_id if line.own else ""

    def _refresh_panels(self) -> None:
        """Redraw the sidebar labels, the members line and the status line."""
        for view in self._views.values():
            for label in self.query(f"#{item_id(view.room_id)} .room-label").results(Static):
                label.update(self._room_label(view))
        current = self._current()
        members = self._widget("#members", Static)
        status = self._widget("#status", Static)
        if members is None or status is None:
            return
        if current is None:
            members.update("")
            self._members_shown = None
            status.update(Text("no room", style="dim"))
        else:
            # Drawn again only when it changed (the same line is kept till then).
            if (text := self._members_text(current)) is not self._members_shown:
                members.update(text)
                self._members_shown = text
            status.update(self._status_text(current))

    def _members_text(self, view: RoomView) -> Text:
        """The relay's count; who announced themselves (those marked ⚠ first: the line
        may be cut); how many of those counted did not; ourselves. The line last made,
        unless what it shows changed (``MembersLine``)."""
        line = view.members_line
        line.take(view.roster)
        if line.named is None:
            # Each member's mark is known (MembersLine.marks): one pass finds those marked
            # ⚠, and the first others, oldest first; only those shown are drawn.
            marked: list[Member] = []
            others: list[Member] = []
            for member in view.roster:
                if self._suspect(view, member):
                    marked.append(member)
                elif len(others) < MEMBERS_SHOWN:
                    others.append(member)
            named = Text()
            for index, member in enumerate((marked + others)[:MEMBERS_SHOWN]):
                named.append(", " if index else "  ·  ")
                if index < len(marked):
                    named.append("⚠ ", style="bold yellow")
                colour = name_colour(member.fingerprint)
                named.append(printable(member.name), style=f"bold {colour}")
                named.append(f" {member.fingerprint}")
            if len(view.roster) > MEMBERS_SHOWN:
                named.append(f" and {len(view.roster) - MEMBERS_SHOWN} more")
            line.named, line.text = named, None
        elif line.text is not None and line.online == view.online:
            return line.text
        online = "?" if view.online is None else str(view.online)
        shown = Text(f"Online: {online} (you included)", style="bold")
        shown.append_text(line.named)
        # Counted by the relay, and silent: scripts, or clients that announce nothing.
        silent = 0 if view.online is None else view.online - 1 - len(view.roster)
        if silent > 0:
            shown.append(f"  ·  {silent} not named")
        shown.append(f"  ·  you: {printable(self._user)} {self._fingerprint}", style="dim")
        line.online, line.text = view.online, shown
        return shown

    def _status_text(self, view: RoomView) -> Text:
        shown = self._connection_state(view.client)
        if view.refused and view.client is not None and view.client.failure is None:
            shown = Text(f"✗ the relay refused this room: {view.refused}", style="bold red")
        elif view.no_place and view.client is not None and view.client.connected.is_set():
            # Connected, but not in the room: "connected" would say the opposite.
            shown = Text("○ no place in the room for now, trying again", style="bold yellow")
        # What matters most first: the line shows two rows, and a narrow one cuts the rest.
        if view.sending:
            shown.append(f"  ·  {view.sending} waiting to send", style="bold")
        if self.screen.has_class("-narrow"):  # the rooms' list, with its counts, is hidden
            unread = sum(other.unread for other in self._views.values() if other is not view)
            if unread:
                shown.append(f"  ·  {unread} new in other rooms", style="bold")
        shown.append(f"  ·  {printable(view.stored.label)} on {shown_server(view.stored.server)}")
        shown.append(f"  ·  {expiry_text(view.stored.expires_at_ms, self._expiry_now(view))}")
        shown.append("  ·  history kept" if view.stored.keep_history else "  ·  no history kept")
        return shown

    def _connection_state(self, client: RoomClient | None) -> Text:
        if client is None:
            return Text("✗ no connection", style="bold red")
        if client.url in self._failures:
            return Text(f"✗ {self._failures[client.url]}", style="bold red")
        if client.failure is not None:
            # Refused for good (a fatal close code) while nothing was waiting on it.
            return Text(f"✗ {printable(str(client.failure))}", style="bold red")
        if client.connected.is_set():
            self._ever_connected.add(client.url)
            return Text("● connected", style="bold green")
        state = "reconnecting…" if client.url in self._ever_connected else "connecting…"
        if client.unreachable is not None:  # else "connecting…" forever, with no reason
            return Text(f"○ {state} {client.unreachable}", style="bold yellow")
        return Text(f"○ {state}", style="bold yellow")

    def _select(self, room_id: bytes | None) -> None:
        if room_id == self._selected:
            return
        self._selected = room_id
        if (view := self._current()) is not None:
            view.unread = 0
        if (log := self._widget("#conversation", Conversation)) is not None:
            log.following = True  # another room opens at its end
        self._show_conversation()
        self._refresh_panels()

    async def _remove_view(self, view: RoomView, why: str, *, saved: bool = True) -> None:
        """Take ``view`` off the screen (its room is already forgotten by the store, and
        written so unless ``saved`` is false)."""
        if self._views.pop(view.room_id, None) is None:
            return  # gone already
        rooms = self._widget("#rooms", ListView)
        if rooms is None:
            return  # the chat is quitting
        index = next(
            (i for i, item in enumerate(rooms.children) if item.id == item_id(view.room_id)),
            None,
        )
        draft = ""
        if view.room_id == self._selected:
            # What was being written to this room must not go to the one shown next on
            # Enter (the input line is shared): it is taken out, and shown there unsent.
            if (line_in := self._widget("#input", MessageInput)) is not None:
                draft, line_in.value = line_in.value, ""
            self._select(next(iter(self._views), None))
        if draft.strip():
            self._note(
                self._current(),
                f"What you were writing to {printable(view.stored.label)!r} was not sent: "
                f"{printable(draft, newlines=True)}",
                "warning",
            )
        # The room shown highlighted before the item goes: the list would move its
        # highlight to the next room, which would be marked as read, never seen.
        shown = item_id(self._selected) if self._selected is not None else None
        at = next((i for i, item in enumerate(rooms.children) if item.id == shown), None)
        if at is not None:
            rooms.index = at
        if index is not None:
            await rooms.remove_items([index])
        if self._selected is not None:
            rooms.index = list(self._views).index(self._selected)
        if saved:
            self.notify(
                f"Room {printable(view.stored.label)!r} {why}: its key and messages are "
                "deleted from this device.",
                markup=False,
            )
        else:  # said as it is: a room "deleted" whose key is still on disk misleads
            self.notify(
                f"Room {printable(view.stored.label)!r} {why}, but is gone from this screen "
                f"only: {self._not_written('its key and messages')}",
                severity="error",
                timeout=60,
                markup=False,
            )
        self._refresh_panels()

    def _not_written(self, what: str) -> str:
        """That the key store still holds ``what``, deleted here but not written."""
        if self._saving_stopped:  # never written by this chat: another one must do it
            return (
                f"the key store could not be written, and still holds {what} "
                "(do it again in a chat opened anew)."
            )
        return (
            f"the key store could not be written, and holds {what} until it can be "
            "(tried again each second)."
        )

    def on_list_view_highlighted(self, event: ListView.Highlighted) -> None:
        # Only a highlight that is still there: one passed through (a room removed, keys
        # held down) is no room shown, and showing it would mark it read.
        if event.item is not event.list_view.highlighted_child:
            return
        if event.item is not None and event.item.id is not None:
            room_id = bytes.fromhex(event.item.id.removeprefix("room-"))
            if room_id in self._views:
                self._select(room_id)

    def on_conversation_resized(self, event: Conversation.Resized) -> None:
        self._redraw_soon()  # once for a window dragged through many widths

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        self.query_one("#input", Input).focus()

    async def action_quit(self) -> None:
        """Quit. Messages not sent yet are kept in the store, and the next chat sends them;
        when it cannot be written, only when asked twice: they would go with the chat."""
        waiting = sum(view.sending for view in self._views.values())
        if waiting and not self._quit_armed and self._dirty and not self._save():
            self._quit_armed = True
            self.notify(
                f"{waiting} message(s) not sent yet, and the key store cannot be written: "
                "they are lost if you quit now. Ctrl+Q again quits all the same.",
                severity="warning",
            )
            return
        await super().action_quit()

    def action_next_room(self) -> None:
        self.query_one("#rooms", ListView).action_cursor_down()

    def action_previous_room(self) -> None:
        self.query_one("#rooms", ListView).action_cursor_up()

    def action_page_conversation(self, direction: int) -> None:
        log = self.query_one("#conversation", RichLog)
        if direction < 0:
            log.scroll_page_up()
        else:
            log.scroll_page_down()

    # the store

    def _save(self, *, wipe: bool = False, only_theirs: bool = False) -> bool:
        """Write the store, merging what another program wrote meanwhile (a room it added
        shows up here, one it forgot goes); say whether it was written. ``only_theirs``:
        this chat has nothing to write, so only take in what another program wrote. A
        failed write is said, never a crash: a full disk is tried again each second; a
        password changed elsewhere stops the saving."""
        if self._saving_stopped:
            return False
        try:
            if wipe:
                forgotten = []
            elif only_theirs:
                forgotten = self._store.take_in()
            else:
                forgotten = self._store.save()
            if wipe:
                self._store.wipe()
        except (StoreChanged, DamagedStore) as exc:
            self._saving_stopped = True
            self._dirty = True
            self._save_problem = str(exc)
            self._password_changed = isinstance(exc, PasswordChanged)
            then = (
                " until it has the new password: type /password."
                if self._password_changed
                else ": quit it and open it again."
            )
            self.notify(
                f"{exc} This chat saves nothing more{then}",
                severity="error",
                timeout=60,
                markup=False,
            )
            return False
        except OSError as exc:
            self._dirty = True
            problem = f"The key store could not be written ({exc.strerror or type(exc).__name__})."
            if problem != self._save_problem:
                self._save_problem = problem
                self.notify(f"{problem} Trying again each second.", severity="error", markup=False)
            return False
        self._save_problem = None
        if not only_theirs:  # (ids recorded meanwhile wait for their own write)
            self._dirty = False
            self._ids_unsaved_since = None
        added = [room for room in self._store.rooms if room.room_id not in self._views]
        if forgotten or added:
            self.run_worker(self._follow_store(forgotten, added), group="store")
        return True

    def took_as_password(self, entered: str) -> bool:
        """Whether ``entered``, submitted in the input line, goes to the question for the
        key store's new password: /password itself, once another program changed it (what
        follows it on the line is tried as the password), or anything entered while the
        question is up or being put up. It is never sent, nor shown."""
        if self._password_screen is not None:
            self._password_screen.offer(entered)
            return True
        word, _, rest = entered.strip().partition(" ")
        word, _, after_break = word.partition("\n")
        if word.lower() != "/password" or not self._password_changed:
            return False
        screen = self._password_screen = PasswordScreen(self._take_password)
        self.push_screen(screen, callback=self._password_question_gone)
        if typed := (after_break + " " + rest).strip():
            screen.offer(typed)
        return True

    def _password_question_gone(self, taken: bool | None) -> None:
        self._password_screen = None

    async def _take_password(self, password: str) -> str | None:
        """Try ``password`` for the key store (Argon2, in a thread): None once it is taken
        (the chat then saves again) or cannot be (said), else why it is not."""
        try:
            # Shielded: the question closed meanwhile (Escape, Ctrl+Q) does not stop the
            # thread, and the password it takes is taken (_adopt_password).
            await asyncio.shield(asyncio.to_thread(self._adopt_password, password))
        except WrongPassword:
            return "That is not the key store's password: try again, or Escape."
        except (StoreChanged, DamagedStore) as exc:  # gone, or another store: for good
            self._save_problem = str(exc)
            self.notify(str(exc), severity="error", timeout=60, markup=False)
            return None
        except OSError as exc:
            return f"The key store could not be read ({exc.strerror or type(exc).__name__})."
        if self._save():  # what this chat changed meanwhile, merged and written
            self.notify("The key store's new password is taken: this chat saves again.")
        return None

    def _adopt_password(self, password: str) -> None:
        """In a thread: take ``password`` for the store and let the chat save again (its
        next save, or the one as it quits, which waits for this)."""
        with self._adopting:
            try:
                self._store.take_password(password)
            except (StoreChanged, DamagedStore):
                self._password_changed = False  # nothing to give a password to any more
                raise
            self._password_changed = self._saving_stopped = False
            self._save_problem = None

    def _ask_new_password(self, view: RoomView | None) -> None:
        """/password when there is no new password to give."""
        if self._saving_stopped:
            self._note(
                view,
                f"{self._save_problem} A password cannot help: this chat saves nothing "
                "more (quit it and open it again).",
                "error",
            )
            return
        self._note(
            view,
            "The key store's password is as this chat opened it: /password is for when "
            "another program changed it. To change it, quit and run instantroom passwd.",
        )

    def _ids_changed(self) -> None:
        if self._ids_unsaved_since is None:
            self._ids_unsaved_since = time.monotonic()

    @property
    def unsaved(self) -> str | None:
        """Why changes made in this chat are not in the store, if they are not."""
        return self._save_problem if self._dirty else None

    async def _follow_store(self, forgotten: list[StoredRoom], added: list[StoredRoom]) -> None:
        """Show the rooms another program added to the store, drop those it forgot."""
        for room in forgotten:
            view = self._views.get(room.room_id)
            if view is not None and view.stored is room:
                if view.client is not None:
                    await view.client.leave(view.room_id)
                await self._remove_view(view, "was forgotten by another InstantRoom")
        rooms = self._widget("#rooms", ListView)
        if rooms is None:
            return  # the chat is quitting: the next one shows them
        for room in added:
            if room.room_id in self._views or room not in self._store.rooms:
                continue  # shown meanwhile, or gone again
            view = self._view_of(room)
            self._views[view.room_id] = view
            await rooms.append(self._room_item(view))
            self._connect(view)
            if self._selected is None:
                self._select(view.room_id)
        self._refresh_panels()

    def _fatal_error(self) -> None:
        """Report a crash without local variables. Textual's report lists each frame's
        locals, and those can hold room keys and the decrypted store."""
        self.bell()
        report = Traceback(show_locals=False, width=None)
        self._exit_renderables.append(Segments(self.console.render(report, self.console.options)))
        self._close_messages_no_wait()

    async def _tick(self) -> None:
        """Once a second: delete expired rooms, write what was added or take in what another
        program wrote, refresh the panels."""
        # Each room by its relay's reading of this clock: one days fast, which that relay
        # says is fast, deletes no room early (RoomClient.expiry_now).
        clients = {view.stored.key: view.client for view in self._views.values() if view.client}
        expired = [
            stored
            for stored in self._store.rooms
            if stored.expired(
                c.expiry_now()
                if (c := clients.get(stored.key))
                else relay_expiry_now(stored.server)
            )
        ]
        for stored in expired:
            self._store.forget(stored)
        if expired:
            saved = self._save()
            for view in list(self._views.values()):
                if any(view.stored is stored for stored in expired):
                    if view.client is not None:
                        await view.client.leave(view.room_id)
                    await self._remove_view(view, "has expired", saved=saved)
        elif self._dirty or (
            self._ids_unsaved_since is not None
            and time.monotonic() - self._ids_unsaved_since >= IDS_SAVED_WITHIN
        ):
            self._save()  # which takes in, and shows, what another program changed
        elif not self._saving_stopped and self._store.changed_elsewhere():
            self._save(only_theirs=True)
        self._refresh_panels()

    # what the user types

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        if not isinstance(event.input, MessageInput):
            return  # another screen's field (a password): never a message
        text = event.value  # the input line is empty already, or holds what was typed since
        if not text.strip():
            return
        if text.startswith("/") and not text.startswith("//"):
            await self._command(text)
            return
        self._wipe_armed = self._quit_armed = False
        self._leave_armed = None
        if not self._send(text.removeprefix("/")):
            self._give_back(text)
            self._note(self._current(), "What you wrote is back in the input line.")

    def _give_back(self, text: str) -> None:
        """Put ``text``, taken from the input line by Enter and not sent, back into it, so
        that it is not lost (before what was typed since, as the line after it)."""
        if (line_in := self._widget("#input", MessageInput)) is not None:
            line_in.value = f"{text}\n{line_in.value}" if line_in.value else text
            line_in.cursor_position = len(text)

    def _send(self, text: str) -> bool:
        """Send ``text`` to the room shown. False if it went nowhere, not even as a line
        marked not sent (too long, no room): it goes back to the input line, not lost."""
        view = self._current()
        if view is None:
            self._note(None, "There is no room here to send to: nothing was sent.", "error")
            return False
        if view.client is None:
            self._note(view, "This room has no connection: nothing was sent.", "error")
            return False
        if (log := self._widget("#conversation", Conversation)) is not None:
            log.following = True  # one's own message is read at the end, as replies are
        line = Line("message", text, now_ms(), self._user, self._fingerprint, own=True)
        if view.refused:  # the client would say "join the room first", which cannot help
            line.failed = f"the relay refused this room: {view.refused}"
            self._add_line(view, line)
            return True
        try:
            message, envelope = view.client.post_text(view.room_id, text)
        except UsageError as exc:  # it cannot go as it is (too long): to be cut, not lost
            self._note(view, f"Not sent: {printable(str(exc))}", "error")
            return False
        except (RoomGone, RelayRefused) as exc:
            line.failed = printable(str(exc))
            self._add_line(view, line)
            return True
        # Kept, sealed, until the relay takes it (Accepted), kept history or not.
        self._own_ids.add(message.message_id)
        line.timestamp_ms, line.message_id = message.timestamp_ms, message.message_id.hex()
        line.waiting = True
        view.stored.add_outgoing(message.message_id, message.timestamp_ms, envelope)
        view.stored.record_recent(message.message_id, message.timestamp_ms)
        if view.stored.keep_history:
            line.entry = HistoryEntry(
                line.message_id, line.timestamp_ms, self._user, self._fingerprint, text, False
            )
            view.stored.keep(line.entry)
        self._dirty = True
        self._add_line(view, line)
        self._refresh_panels()
        return True

    async def _command(self, text: str) -> None:
        word, _, rest = text[1:].strip().partition(" ")
        word, _, pasted = word.partition("\n")  # a paste's next lines are no command's
        word, rest = word.lower(), f"{pasted} {rest}".strip()
        if word != "wipe":
            self._wipe_armed = False
        if word != "leave":
            self._leave_armed = None
        view = self._current()
        if word == "help":
            self._note(view, HELP)
        elif word == "wipe":
            await self._wipe()
        elif word == "password":
            self._ask_new_password(view)
        elif word not in ("key", "qr", "leave", "delete", "clear", "history"):
            self._note(
                view,
                f"There is no command /{printable(word)}: /help lists them. What you wrote "
                "is back in the input line: / again at its start sends it as a message.",
                "error",
            )
            self._give_back(text)  # a pasted path ("/var/log is full…") is not lost
        elif view is None:
            self._note(None, "Open a room first.", "error")
        elif word == "key":
            self._show_key(view)
        elif word == "qr":
            self._show_qr(view)
        elif word == "leave":
            await self._leave(view)
        elif word == "delete":
            self._delete(view, rest)
        elif word == "clear":
            self._clear(view)
        else:
            self._set_history(view, rest)

    def _invite(self, view: RoomView) -> str | None:
        try:
            return format_invite(view.stored.server, view.stored.key)
        except UsageError as exc:
            self._note(view, f"No invite link: {exc}", "error")
            return None

    def _show_key(self, view: RoomView) -> None:
        key = view.stored.key
        lines = [
            f"The key of {printable(view.stored.label)!r}, to read aloud in groups of five:",
            f"    {format_minikey(key)}",
            *(f"    {n}. {spelled}" for n, spelled in enumerate(spell_minikey(key), start=1)),
        ]
        invite = self._invite(view)
        if invite is not None:
            lines.append(f"Invite link: {invite}")
        lines.append(
            "Anyone who has the key is in the room: share it by voice, or show the "
            "QR code (/qr) in person."
        )
        self._note(view, "\n".join(lines))

    def _show_qr(self, view: RoomView) -> None:
        invite = self._invite(view)
        if invite is None:
            return
        drawing = io.StringIO()
        segno.make(invite, error="m").terminal(out=drawing, compact=True, border=2)
        self._note(
            view,
            f"The invite of {printable(view.stored.label)!r}: scan it with a "
            "phone camera. Anyone who scans it is in the room.",
        )
        self._add_line(view, Line("code", drawing.getvalue().rstrip("\n")))

    async def _leave(self, view: RoomView) -> None:
        if self._leave_armed != view.room_id:
            self._leave_armed = view.room_id
            self._note(
                view,
                f"/leave deletes the key and messages of {printable(view.stored.label)!r} "
                "from this device: you can come back only with the key from someone in the "
                "room. Type /leave again to leave.",
                "warning",
            )
            return
        self._leave_armed = None
        if view.client is not None:
            await view.client.leave(view.room_id)
        self._store.forget(view.stored)
        await self._remove_view(view, "was left on the relay", saved=self._save())

    def _delete(self, view: RoomView, rest: str) -> None:
        numbered = {line.number: line for line in view.lines if line.kind == "message"}
        try:
            number = int(rest)
        except ValueError:
            number = 0
        if not numbered:
            self._note(view, "There is no message here to delete.", "error")
            return
        if number not in numbered:
            low, high = min(numbered), max(numbered)
            here = f"{low} here" if low == high else f"{low} to {high} here"
            self._note(
                view,
                f"Say which message: /delete N, N being the number before it ({here}).",
                "error",
            )
            return
        gone = numbered[number]
        view.lines = [line for line in view.lines if line is not gone]
        # Remembered for the replay window, so that a relay cannot bring it back after a
        # restart; a room whose history is not kept gets this too.
        view.stored.record_deleted(gone.message_id, gone.timestamp_ms)
        if gone.entry is not None:
            view.stored.history = [e for e in view.stored.history if e is not gone.entry]
        saved = self._save() if gone.entry is not None or gone.message_id else True
        self._show_conversation()
        if not saved:
            self.notify(
                f"Message {number} is gone from this screen only: {self._not_written('it')}",
                severity="error",
                timeout=60,
                markup=False,
            )
        elif gone.waiting:  # the outbox keeps it: it went out as it was written
            self.notify(
                f"Message {number} deleted from this screen. It was waiting for the relay, "
                "and is still sent to the others."
            )
        else:
            self.notify(f"Message {number} deleted.")

    def _clear(self, view: RoomView) -> None:
        waiting = any(line.waiting for line in view.lines)
        gone = {line.message_id: line.timestamp_ms for line in view.lines if line.kind == "message"}
        # The kept ones no longer on screen too (a room shows MAX_LINES_PER_ROOM at most).
        gone |= {entry.message_id: entry.timestamp_ms for entry in view.stored.history}
        for message_id, timestamp_ms in gone.items():
            view.stored.record_deleted(message_id, timestamp_ms)
        view.stored.history = []
        view.lines, view.numbered = [], 0
        saved = self._save()
        self._show_conversation()
        still = " Yours still waiting for the relay are still sent." if waiting else ""
        if saved:
            self.notify(f"This room's history is deleted from the screen and this device.{still}")
        else:
            self.notify(
                "This room's history is gone from this screen only: "
                f"{self._not_written('it')}{still}",
                severity="error",
                timeout=60,
                markup=False,
            )

    def _set_history(self, view: RoomView, rest: str) -> None:
        choice = rest.lower()
        if choice == "on":
            view.stored.keep_history = True
            self._save()
            self._note(
                view,
                "From now on this room's messages are kept on this device, "
                "encrypted in your key store. /history off deletes them.",
            )
        elif choice == "off":
            view.stored.keep_history = False
            view.stored.history = []
            for line in view.lines:
                line.entry = None
            if self._save():
                self._note(
                    view,
                    "This room's messages are no longer kept: the kept ones are "
                    "deleted from this device (they stay on this screen until you "
                    "quit).",
                )
            else:
                self._note(
                    view,
                    "This room's messages are no longer kept here, but "
                    + self._not_written("the kept ones"),
                    "error",
                )
        else:
            now = "on" if view.stored.keep_history else "off"
            self._note(view, f"History is {now} for this room: /history on or /history off.")
        self._refresh_panels()

    async def _wipe(self) -> None:
        if not self._wipe_armed:
            self._wipe_armed = True
            self._note(
                self._current(),
                "/wipe deletes every room's key and all messages from "
                "this device, then quits. Type /wipe again to do it.",
                "warning",
            )
            return
        if not self._save(wipe=True):
            self._wipe_armed = False
            self._note(
                self._current(),
                "Nothing was wiped: the key store could not be written (see the note). "
                "Your rooms are still on this device.",
                "error",
            )
            return
        for view in self._views.values():
            if view.client is not None:
                await view.client.leave(view.room_id)
        self.exit()
