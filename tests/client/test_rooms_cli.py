"""new, join, rooms, qr, forget and passwd, as real processes, against a real relay."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest
import segno
import zxingcpp
from PIL import Image

from instantroom.client.invite import format_invite
from instantroom.client.keystore import KeyStore, StoredRoom
from instantroom.protocol.kdf import RoomKeys
from instantroom.protocol.minikey import format_minikey, make_minikey
from instantroom.testing import RelayProcess, raw_client, run, running_relay

ROOT = Path(__file__).resolve().parents[2]

PASSWORD = "a long enough password"


def cli(
    store: Path,
    *args: str,
    password: str = PASSWORD,
    check: bool = True,
    env: dict[str, str] | None = None,
    stdin: str = "",
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": password, "INSTANTROOM_KEYSTORE": str(store)}
    environ |= env or {}
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", *args], input=stdin,
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr
    return result


def decode(image: Image.Image) -> list[str]:
    return [code.text for code in zxingcpp.read_barcodes(image)]


def rasterise_terminal(text: str) -> Image.Image:
    """Turn segno's compact terminal drawing back into pixels: each character is two
    modules stacked, drawn light on a dark terminal (a full block is two light modules)."""
    halves = {" ": (0, 0), "█": (1, 1), "▀": (1, 0), "▄": (0, 1)}
    lines = [line for line in text.splitlines() if line and set(line) <= set(halves)]
    width = max(len(line) for line in lines)
    scale = 8
    image = Image.new("L", (width * scale, len(lines) * 2 * scale), 0)
    for y, line in enumerate(lines):
        for x, char in enumerate(line):
            for half, light in enumerate(halves[char]):
                if light:
                    box = (
                        x * scale,
                        (2 * y + half) * scale,
                        (x + 1) * scale,
                        (2 * y + half + 1) * scale,
                    )
                    image.paste(255, box)
    # Printed light-on-dark, so the code is inverted; add a light quiet zone around it.
    inverted = Image.eval(image, lambda v: 255 - v)
    framed = Image.new("L", (inverted.width + 8 * scale, inverted.height + 8 * scale), 255)
    framed.paste(inverted, (4 * scale, 4 * scale))
    return framed


def test_new_stores_the_room_prints_its_card_and_fixes_its_lifetime(
    tmp_path: Path, relay: RelayProcess
) -> None:
    store = tmp_path / "store.json"
    result = cli(store, "new", "--label", "team", "--expires", "2h", "--server", relay.url)
    opened = KeyStore.open(store, PASSWORD)
    (room,) = opened.rooms
    invite = format_invite(relay.url, room.key)
    assert invite in result.stdout
    assert " ".join(room.key[i : i + 5] for i in range(0, 30, 5)) in result.stdout
    assert "capital S (sierra)" in result.stdout
    assert abs(room.expires_at_ms - (time.time() * 1000 + 2 * 3600 * 1000)) < 60_000
    # The terminal QR code in the card decodes to the invite link.
    assert decode(rasterise_terminal(result.stdout)) == [invite]

    async def a_member_joins_knowing_no_expiry() -> int:
        async with raw_client(relay.ws_url) as member:
            joined = await member.join(RoomKeys.from_minikey(room.key), 0)
            return joined.expires_at_ms

    # The relay learned the creator's lifetime when the room was made.
    assert run(a_member_joins_knowing_no_expiry()) == room.expires_at_ms


def test_qr_codes_saved_as_png_and_svg_decode_to_the_invite_link(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    room = opened.add_room(
        StoredRoom(key="S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy", label="team",
                   server="https://relay.example/", expires_at_ms=0)
    )  # fmt: skip
    opened.save()
    invite = format_invite(room.server, room.key)
    png, svg = tmp_path / "room.png", tmp_path / "room.svg"
    cli(store, "qr", "team", "--png", str(png))
    assert decode(Image.open(png)) == [invite]
    cli(store, "qr", "team", "--svg", str(svg))
    assert svg.read_text().startswith("<?xml")
    shown = cli(store, "qr", "team")
    assert decode(rasterise_terminal(shown.stdout)) == [invite]
    # The same code, drawn by segno straight to pixels, for comparison.
    buffer = io.BytesIO()
    segno.make(invite, error="m").save(buffer, kind="png", scale=4)
    assert decode(Image.open(buffer)) == [invite]


def test_join_rooms_and_forget(tmp_path: Path, relay: RelayProcess) -> None:
    creator_store, store = tmp_path / "creator.json", tmp_path / "store.json"
    cli(creator_store, "new", "--expires", "3h", "--server", relay.url)
    (made,) = KeyStore.open(creator_store, PASSWORD).rooms
    key = made.key
    cli(store, "join", format_invite(relay.url, key), "--label", "friends")
    (room,) = KeyStore.open(store, PASSWORD).rooms
    assert room.server.rstrip("/") == relay.url.rstrip("/")
    assert room.expires_at_ms == made.expires_at_ms  # the creator's, learned from the relay
    listing = cli(store, "rooms").stdout
    assert "friends" in listing
    assert "online: 0" in listing
    assert key not in listing
    # Offline, no relay is asked, so none is said to be out of reach ("online: ?").
    (offline,) = cli(store, "rooms", "--offline").stdout.splitlines()
    assert offline.startswith("friends")
    assert "online" not in offline
    cli(store, "forget", "friends")
    assert KeyStore.open(store, PASSWORD).rooms == []
    assert "No rooms" in cli(store, "rooms").stdout


def test_an_expired_room_is_gone_from_rooms_and_from_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    now = int(time.time() * 1000)
    opened.add_room(
        StoredRoom("S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy", "over", "http://127.0.0.1:9/", now - 1000)
    )
    opened.add_room(
        StoredRoom(
            "SDehB97fmBnFwezqLcANLCCQkQyfz1", "still", "http://127.0.0.1:9/", now + 3_600_000
        )
    )
    opened.save()
    result = cli(store, "rooms", "--offline")
    assert "still" in result.stdout
    assert "over" not in result.stdout
    assert "has expired" in result.stderr
    assert [r.label for r in KeyStore.open(store, PASSWORD).rooms] == ["still"]


def test_an_expired_room_in_a_read_only_store_is_left_out_and_the_store_kept(
    tmp_path: Path,
) -> None:
    """Made read-only by its owner, the store is read as it is: `rooms` works, the
    expired room is left out and said to stay in the file."""
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    now = int(time.time() * 1000)
    opened.add_room(StoredRoom(OTHER_KEY, "over", NOWHERE, now - 1000))
    opened.add_room(StoredRoom(make_minikey(secrets.randbelow), "still", NOWHERE, now + 3_600_000))
    opened.save()
    store.chmod(0o400)
    before = store.read_bytes()
    result = cli(store, "rooms", "--offline", check=False)
    assert result.returncode == 0, result.stderr
    assert "still" in result.stdout
    assert "over" not in result.stdout
    assert "Room 'over' has expired: it is left out, but stays in the key store" in result.stderr
    assert store.read_bytes() == before


def test_a_wrong_password_at_the_command_line_changes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    KeyStore.create(store, PASSWORD).save()
    before = store.read_bytes()
    result = cli(store, "rooms", password="not it", check=False)
    assert result.returncode != 0
    assert "Wrong password" in result.stderr
    assert "Traceback" not in result.stderr
    assert store.read_bytes() == before


def test_an_empty_password_variable_is_said_to_be_empty_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """No store opens with an empty password (none can be made with one): an empty
    INSTANTROOM_PASSWORD is a script's mistake, said as such, not a wrong password."""
    store = tmp_path / "store.json"
    KeyStore.create(store, PASSWORD).save()
    before = store.read_bytes()
    result = cli(store, "rooms", "--offline", password="", check=False)
    assert result.returncode == 2
    assert "INSTANTROOM_PASSWORD is empty" in result.stderr
    assert "Wrong password" not in result.stderr
    assert store.read_bytes() == before


def test_a_missing_store_is_said_before_a_password_is_asked_for(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_KEYSTORE": str(tmp_path / "none.json")}
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "rooms", "--offline"], stdin=subprocess.DEVNULL,
        start_new_session=True,  # no terminal: a password prompt would read stdin, and end
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "There is no key store at" in result.stderr
    assert "password" not in result.stderr.lower()
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize(
    ("args", "env", "stdin", "said"),
    [
        (("join",), {"INSTANTROOM_KEY": ""}, "", "INSTANTROOM_KEY is empty"),
        (("join",), {"INSTANTROOM_KEY": "  "}, "", "INSTANTROOM_KEY is empty"),
        (("join", ""), {}, "", "The key given is empty"),
        (
            ("send", "--server", "http://127.0.0.1:9/", "--key", " ", "hi"),
            {},
            "",
            "The key given is empty",
        ),
        (("join", "-"), {}, "\n" + "S" * 30 + "\n", "the first line of standard input is empty"),
        (("join", "-"), {}, "", "the first line of standard input is empty"),
    ],
)
def test_an_empty_key_is_said_to_be_missing_not_a_key_of_no_characters(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], stdin: str, said: str
) -> None:
    store = tmp_path / "store.json"
    result = cli(store, *args, env=env, stdin=stdin, check=False)
    assert result.returncode == 2
    assert said in result.stderr
    assert "0 characters" not in result.stderr
    assert not store.exists()


def test_a_read_only_store_is_left_as_it_is_by_forget(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    _store_with_a_room(store)
    store.chmod(0o400)
    before = store.read_bytes()
    result = cli(store, "forget", "team", check=False)
    assert result.returncode == 2
    assert "Read-only file (chmod u+w lets InstantRoom save it)" in result.stderr
    assert "Traceback" not in result.stderr
    assert store.read_bytes() == before
    assert store.stat().st_mode & 0o777 == 0o400


def test_passwd_changes_the_password(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    KeyStore.create(store, PASSWORD).save()
    cli(store, "passwd", env={"INSTANTROOM_NEW_PASSWORD": "the new one"})
    assert cli(store, "rooms", password="the new one").returncode == 0
    assert cli(store, "rooms", check=False).returncode != 0


@pytest.mark.parametrize("text", ["1h", "1d", "1w", "2h30m", "45m"])
def test_lifetimes_are_parsed(text: str) -> None:
    from instantroom.rooms_cli import parse_duration

    assert parse_duration(text) > 0


def test_send_and_listen_use_the_store(tmp_path: Path, relay: RelayProcess) -> None:
    store = tmp_path / "store.json"
    cli(store, "new", "--label", "team", "--server", relay.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    env |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(store)}
    listener = subprocess.Popen(
        [sys.executable, "-m", "instantroom", "listen", "--room", "team", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        device = KeyStore.open(store, PASSWORD).device
        deadline = time.monotonic() + 20
        line = ""
        while not line and time.monotonic() < deadline:
            cli(store, "send", "--room", "team", "--name", "me", "hello from the store")
            line = _read_line(listener, 1.0)
        assert '"hello from the store"' in line
        assert device.fingerprint in line  # the store's own device key signed it
    finally:
        listener.terminate()
        listener.wait(10)
        assert listener.stdout is not None
        listener.stdout.close()


def _told_expiry(relay: RelayProcess, key: str, expires_at_ms: int) -> None:
    """The room's creator tells the relay its expiry (as ``new`` does)."""

    async def tell() -> None:
        async with raw_client(relay.ws_url) as creator:
            assert (await creator.join(RoomKeys.from_minikey(key), expires_at_ms)).expires_at_ms

    run(tell())


def test_send_and_listen_keep_the_expiry_the_relay_says_for_a_room_stored_without_one(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A room joined by its key alone before its creator told the relay its lifetime is
    stored with none; the relay's, learned by send or listen, is kept (PROTOCOL.md 9), as
    the chat keeps it: the key then goes at expiry, whatever the relay forgets."""
    store, key = tmp_path / "store.json", make_minikey(secrets.randbelow)
    cli(store, "join", "--no-chat", "--label", "r", "--server", relay.url, key)
    assert KeyStore.open(store, PASSWORD).rooms[0].expires_at_ms == 0
    expires = int(time.time() * 1000) + 3_600_000
    _told_expiry(relay, key, expires)
    cli(store, "send", "--room", "r", "hello")
    assert KeyStore.open(store, PASSWORD).rooms[0].expires_at_ms == expires


def test_listen_and_send_delete_a_room_that_expires_or_has_expired(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """At expiry a client deletes the room's key (PROTOCOL.md 9): listen when the relay
    says so, send when the relay refuses the room as expired. The key was left in the
    store, and rewritten to it, until some later command opened the store."""
    store, key = tmp_path / "store.json", make_minikey(secrets.randbelow)
    other = tmp_path / "other.json"
    for path in (store, other):
        cli(path, "join", "--no-chat", "--label", "r", "--server", relay.url, key)
    _told_expiry(relay, key, int(time.time() * 1000) + 2_000)
    listened = cli(store, "listen", "--room", "r", check=False)
    assert listened.returncode == 6, listened.stderr
    assert "the room has expired" in listened.stderr
    assert KeyStore.open(store, PASSWORD).rooms == []
    # A store that never learned the expiry: the relay refuses the room.
    sent = cli(other, "send", "--room", "r", "too late", check=False)
    assert sent.returncode == 6, sent.stderr
    assert KeyStore.open(other, PASSWORD).rooms == []


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            return process.stdout.readline()
    return ""


NOWHERE = "http://127.0.0.1:9/"  # the discard port: refused at once, nothing listens
OTHER_KEY = "SDehB97fmBnFwezqLcANLCCQkQyfz1"


def test_joining_a_stored_room_again_keeps_its_label_and_relay(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    key = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
    cli(store, "join", key, "--label", "team", "--server", NOWHERE, "--no-chat")
    elsewhere = {"INSTANTROOM_SERVER": "http://127.0.0.1:10/"}
    cli(store, "join", key, "--history", "--no-chat", env=elsewhere)
    (room,) = KeyStore.open(store, PASSWORD).rooms
    assert (room.label, room.server, room.keep_history) == ("team", NOWHERE, True)
    # A new room does take its relay from the environment.
    cli(store, "join", OTHER_KEY, "--no-chat", env=elsewhere)
    servers = {r.key: r.server for r in KeyStore.open(store, PASSWORD).rooms}
    assert servers == {key: NOWHERE, OTHER_KEY: "http://127.0.0.1:10/"}


@pytest.mark.parametrize(
    ("label", "said"),
    [
        ("caf\udce9", "A label is UTF-8"),  # the byte 0xE9, from a Latin-1 terminal
        ("red\x1b[31malert", "no control characters"),
        ("x" * 61, "at most 60 characters"),
    ],
)
def test_a_label_that_could_not_be_stored_or_typed_back_is_refused_first(
    tmp_path: Path, label: str, said: str
) -> None:
    """A label not UTF-8 had ended in a traceback, after the relay was asked, and left an
    empty key store behind; one with control characters could not be typed back."""
    store = tmp_path / "store.json"
    for command in (["new", "--server", NOWHERE], ["join", "--server", NOWHERE, OTHER_KEY]):
        result = cli(store, *command, "--label", label, check=False)
        assert result.returncode == 2, result.stderr
        assert said in result.stderr
        assert "Traceback" not in result.stderr
        assert not store.exists()


CASE_HINT = (
    "Room keys are case-sensitive, with capital and small letters mixed, and the letters of "
    "this one "
)


def test_a_key_typed_in_one_case_is_said_to_be_so_whatever_fails_first(tmp_path: Path) -> None:
    """Typed with Caps Lock on, or as heard, a key fails on an O, I or l, on its first
    letter or on its check far more often than on its case: those messages did not say
    what went wrong. Worded as the web client says it (keyCaseHint)."""
    store = tmp_path / "store.json"
    key = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
    said = {
        key.upper(): ("Character 10 ('I')", "are all capital:"),
        key.lower(): ("starts with a capital S", "are all small:"),
        "S" + key[1:].lower(): ("does not pass its check", "are all small after the S:"),
    }
    for typed, (what, case) in said.items():
        for command in (["key", "check", typed], ["join", typed, "--server", NOWHERE]):
            result = cli(store, *command, check=False)
            assert result.returncode in (1, 2), result.stderr
            assert what in result.stderr
            assert f"{CASE_HINT}{case}" in result.stderr
    # A typo in a key of both cases is only a typo.
    typo = cli(store, "key", "check", key[:-1] + "z", check=False)
    assert "case-sensitive" not in typo.stderr
    web = (ROOT / "web" / "src" / "app" / "controller.js").read_text(encoding="utf-8")
    assert f"{CASE_HINT}are all " in web
    assert not store.exists()


def test_a_key_on_standard_input_that_is_not_utf_8_is_said(tmp_path: Path) -> None:
    """In a UTF-8 locale that decodes strictly, it had ended in a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "key", "check", "-"],
        input=b"S6c56\xe9bnXQiBjk9mqSYE7ykVQ7NzrRy\n", capture_output=True, timeout=60,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert b"Standard input is not UTF-8 text" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_label_another_stored_room_has_is_refused_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store.json"
    key = "S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy"
    cli(store, "join", key, "--label", "team", "--server", NOWHERE, "--no-chat")
    for args in (
        ("join", OTHER_KEY, "--label", "team", "--server", NOWHERE, "--no-chat"),
        ("new", "--label", "team", "--server", NOWHERE),
    ):
        result = cli(store, *args, check=False)
        assert result.returncode == 2
        assert "labelled 'team' already" in result.stderr
    assert [room.key for room in KeyStore.open(store, PASSWORD).rooms] == [key]
    # The same room joined again under its own label is no clash.
    cli(store, "join", key, "--label", "team", "--no-chat")


def test_join_reads_the_key_from_standard_input(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    result = cli(store, "join", "-", "--server", NOWHERE, "--no-chat", stdin=OTHER_KEY + "\n")
    assert OTHER_KEY not in result.stdout + result.stderr
    assert [r.key for r in KeyStore.open(store, PASSWORD).rooms] == [OTHER_KEY]


def _store_with_a_room(path: Path) -> None:
    opened = KeyStore.create(path, PASSWORD)
    opened.add_room(StoredRoom(OTHER_KEY, "team", NOWHERE, 0))
    opened.save()


SPY_ON_SEGNO = """
import os, sys, segno
from instantroom.cli import main
saving = segno.QRCode.save
def save(self, out, **options):
    saving(self, out, **options)
    if isinstance(out, (str, os.PathLike)):
        mode = os.stat(out).st_mode
    else:
        out.flush()
        mode = os.fstat(out.fileno()).st_mode
    print(oct(mode & 0o777), file=sys.stderr)  # as the code's bytes land, before any chmod
segno.QRCode.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_qr_code_file_is_owner_only_from_its_first_byte(tmp_path: Path) -> None:
    store, png = tmp_path / "store.json", tmp_path / "room.png"
    _store_with_a_room(store)
    png.write_bytes(b"\x89PNG\r\n\x1a\nan older picture")
    png.chmod(0o644)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(store)}
    result = subprocess.run(
        [sys.executable, "-c", SPY_ON_SEGNO, "qr", "team", "--png", str(png)],
        capture_output=True, text=True, env=environ, timeout=60, check=True,
    )  # fmt: skip
    assert result.stderr.split() == ["0o600"]
    assert oct(png.stat().st_mode & 0o777) == "0o600"
    assert decode(Image.open(png)) == [format_invite(NOWHERE, OTHER_KEY)]


def test_a_qr_code_is_not_written_through_a_symbolic_link(tmp_path: Path) -> None:
    store, target, link = tmp_path / "store.json", tmp_path / "target", tmp_path / "room.png"
    _store_with_a_room(store)
    target.write_text("untouched")
    link.symlink_to(target)
    result = cli(store, "qr", "team", "--png", str(link), check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(link) in result.stderr
    assert target.read_text() == "untouched"


def test_a_qr_code_is_not_written_over_the_key_store_or_another_file(tmp_path: Path) -> None:
    """``qr team --png STORE`` had replaced the key store, every key in it lost for good."""
    store, notes = tmp_path / "store.json", tmp_path / "notes.txt"
    settings = tmp_path / "settings.xml"  # XML, as an SVG file is, but no image
    _store_with_a_room(store)
    notes.write_text("my notes")
    settings.write_text('<?xml version="1.0"?><settings><token>abc</token></settings>')
    kept = store.read_bytes()
    for target in (store, notes, settings):
        for kind in ("--png", "--svg"):
            result = cli(store, "qr", "team", kind, str(target), check=False)
            assert result.returncode == 2, result.stderr
            assert "is no image" in result.stderr
    assert store.read_bytes() == kept
    assert notes.read_text() == "my notes"
    assert "<token>abc</token>" in settings.read_text()
    assert "team" in cli(store, "rooms", "--offline").stdout
    # A QR code saved before is written over, as asked.
    png = tmp_path / "room.png"
    cli(store, "qr", "team", "--svg", str(png))
    cli(store, "qr", "team", "--png", str(png))
    assert png.read_bytes().startswith(b"\x89PNG")


def test_a_folder_given_as_the_store_is_one_clear_line(tmp_path: Path) -> None:
    result = cli(tmp_path, "rooms", check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == f"instantroom: Is a directory: {tmp_path}"


def test_input_that_ends_at_the_password_prompt_is_one_clear_line(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    _store_with_a_room(store)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_KEYSTORE": str(store)}
    result = subprocess.run(
        [sys.executable, "-m", "instantroom", "rooms", "--offline"], stdin=subprocess.DEVNULL,
        start_new_session=True,  # no terminal for getpass to open: it reads stdin
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "the input ended before the password was given" in result.stderr


ESCAPES = "\x1b]0;owned\x07\x1b[2J"


def test_a_hostile_invite_link_is_refused_and_nothing_reaches_the_terminal(
    tmp_path: Path,
) -> None:
    """A relay address with escape sequences in a link is refused, said without them, and
    nothing is stored."""
    store = tmp_path / "store.json"
    for address in (f"http://127.0.0.1:9/{ESCAPES}", "https://relay.exa\u202eelpmaxe/"):
        result = cli(store, "join", f"{address}#{OTHER_KEY}", "--no-chat", check=False)
        assert result.returncode == 2
        assert "relay address holds" in result.stderr
        for control in ("\x1b", "\x07", "\u202e"):
            assert control not in result.stdout + result.stderr
    for command in (["new"], ["join", OTHER_KEY, "--no-chat"]):
        result = cli(store, *command, "--server", f"http://127.0.0.1:9/{ESCAPES}", check=False)
        assert result.returncode == 2
        assert "The server's address holds" in result.stderr
        assert "\x1b" not in result.stdout + result.stderr
    assert not store.exists()  # refused before the store is even made


def test_a_stored_label_or_relay_with_escapes_is_shown_without_them(tmp_path: Path) -> None:
    """A store written before relay addresses were checked, or a label typed so: rooms,
    forget and the room card print them through printable()."""
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    opened.add_room(StoredRoom(OTHER_KEY, f"team{ESCAPES}", f"{NOWHERE}{ESCAPES}", 0))
    opened.save()
    listing = cli(store, "rooms", "--offline")
    assert "team" in listing.stdout
    assert "127.0.0.1:9" in listing.stdout
    # Asked about, the room's relay address is no relay's: shown as out of reach.
    online = cli(store, "rooms")
    forgotten = cli(store, "forget", OTHER_KEY_ROOM_ID[:8])
    assert "Forgot room 'team" in forgotten.stdout
    # A label typed so is refused now (and not echoed).
    card = cli(store, "new", "--label", f"card{ESCAPES}", "--server", NOWHERE, check=False)
    assert card.returncode == 2
    assert "no control characters" in card.stderr
    for result in (listing, online, forgotten, card):
        for control in ("\x1b", "\x07"):
            assert control not in result.stdout + result.stderr


OTHER_KEY_ROOM_ID = RoomKeys.from_minikey(OTHER_KEY).room_id.hex()


def test_a_new_room_beyond_the_relays_longest_lifetime_is_refused_and_not_kept(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """The relay keeps rooms 31 days at most: five weeks is refused, said as a refusal
    with the relay's reason (not as "out of reach"), exit 2, and the room is not kept."""
    store = tmp_path / "store.json"
    result = cli(store, "new", "--expires", "5w", "--server", relay.url, check=False)
    assert result.returncode == 2
    assert "the relay refused the new room" in result.stderr
    assert "This relay keeps rooms for less time." in result.stderr  # its words
    assert "--expires" in result.stderr
    assert "out of reach" not in result.stderr
    assert "Key:" not in result.stdout
    assert not store.exists()  # a first command refused makes no store
    # A relay out of reach does not refuse: the room is kept, as before.
    kept = cli(store, "new", "--label", "later", "--expires", "5w", "--server", NOWHERE)
    assert "out of reach" in kept.stderr
    assert [room.label for room in KeyStore.open(store, PASSWORD).rooms] == ["later"]


def test_joining_a_room_the_relay_refuses_says_so_and_fails(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A room whose time is over on the relay: join says the relay refused, with its
    reason, exits 2, and does not claim to have joined or store the room."""
    creator, store = tmp_path / "creator.json", tmp_path / "store.json"
    cli(creator, "new", "--expires", "1s", "--server", relay.url)
    (made,) = KeyStore.open(creator, PASSWORD).rooms
    time.sleep(max(0.0, made.expires_at_ms / 1000 - time.time()) + 0.2)
    result = cli(store, "join", format_invite(relay.url, made.key), "--no-chat", check=False)
    assert result.returncode == 2
    assert "the relay refused to let us into the room" in result.stderr
    assert "Joined" not in result.stdout
    assert not store.exists()  # a first command refused makes no store
    # With a store, a refused join leaves it as it was.
    cli(store, "new", "--label", "kept", "--server", relay.url)
    before = store.read_bytes()
    again = cli(store, "join", format_invite(relay.url, made.key), "--no-chat", check=False)
    assert again.returncode == 2
    assert store.read_bytes() == before


def test_instantroom_server_does_not_move_a_stored_room_or_a_link_elsewhere(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """INSTANTROOM_SERVER is for bare keys: the stored room's relay, and the link's, win."""
    store = tmp_path / "store.json"
    cli(store, "new", "--label", "team", "--server", relay.url)
    (room,) = KeyStore.open(store, PASSWORD).rooms
    elsewhere = {"INSTANTROOM_SERVER": NOWHERE}
    cli(store, "send", "--room", "team", "--timeout", "10", "by the stored relay", env=elsewhere)
    link = format_invite(relay.url, room.key)
    cli(store, "send", "--key", link, "--timeout", "10", "by the link's relay", env=elsewhere)
    # A bare key does take it: there, nothing answers.
    bare = cli(store, "send", "--key", room.key, "--timeout", "3", "lost", env=elsewhere,
               check=False)  # fmt: skip
    assert bare.returncode == 3  # out of reach


def test_an_empty_instantroom_server_counts_as_unset(tmp_path: Path) -> None:
    """Listed with no value (a compose file, ``INSTANTROOM_SERVER= cmd``): bare keys go to
    the default relay, as without it. "" was taken as the relay and refused as no URL."""
    store = tmp_path / "store.json"
    key = make_minikey(secrets.randbelow)
    empty = {"INSTANTROOM_SERVER": ""}
    sent = cli(store, "send", "--key", key, "--timeout", "1", "x", env=empty, check=False)
    assert "A server is" not in sent.stderr
    cli(store, "join", key, "--no-chat", env=empty)  # stored, out of reach or not
    (room,) = KeyStore.open(store, PASSWORD).rooms
    assert room.server == "http://127.0.0.1:8080"


def test_joining_a_room_full_for_now_stores_it_and_says_so(tmp_path: Path) -> None:
    """A full room has a place again once someone leaves: join keeps the key (the chat
    keeps trying), says the relay has no place now, and rooms shows the room as full."""
    creator, store = tmp_path / "creator.json", tmp_path / "store.json"
    with running_relay("--members-per-room", "1") as relay:
        cli(creator, "new", "--label", "team", "--server", relay.url)
        (made,) = KeyStore.open(creator, PASSWORD).rooms
        env = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
        env |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(creator)}
        listener = subprocess.Popen(  # the one member the room has a place for
            [sys.executable, "-m", "instantroom", "listen", "--room", "team"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        try:
            assert listener.stderr is not None
            assert listener.stderr.readline().startswith("listening in room")
            invite = format_invite(relay.url, made.key)
            result = cli(store, "join", invite, "--label", "later", "--no-chat")
            assert "Joined" not in result.stdout
            assert "no place for us now: This room is full." in result.stdout
            assert [room.key for room in KeyStore.open(store, PASSWORD).rooms] == [made.key]
            listing = cli(store, "rooms")
            assert "online: full" in listing.stdout
        finally:
            listener.terminate()
            listener.wait(10)
            assert listener.stderr is not None
            listener.stderr.close()


OPEN_THE_CHAT = """
import sys
from instantroom.cli import main
from instantroom.tui.app import ChatApp
sys.stdin.isatty = sys.stdout.isatty = sys.stderr.isatty = lambda: True  # a terminal
def run(self, **options):
    print("chat on", self._selected.hex())
ChatApp.run = run
sys.exit(main(sys.argv[1:]))
"""


def test_join_with_a_label_taken_opens_no_chat_and_stores_nothing(
    tmp_path: Path, relay: RelayProcess
) -> None:
    store = tmp_path / "store.json"
    _store_with_a_room(store)  # labelled "team"
    key = make_minikey(secrets.randbelow)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(store)}
    result = subprocess.run(
        [sys.executable, "-c", OPEN_THE_CHAT, "join", format_invite(relay.url, key),
         "--label", "team"],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "chat on" not in result.stdout
    assert "labelled 'team' already" in result.stderr
    assert [room.label for room in KeyStore.open(store, PASSWORD).rooms] == ["team"]


@pytest.mark.parametrize("command", ["new", "join"])
def test_a_label_stored_by_another_program_while_the_relay_is_asked_is_not_taken_twice(
    tmp_path: Path, command: str
) -> None:
    """The label is looked at before the relay is asked, and again under the store's lock
    as the room is written: two `new --label X` run at once store one room X, not two."""
    import socket

    store = tmp_path / "store.json"
    KeyStore.create(store, PASSWORD).save()
    with socket.create_server(("127.0.0.1", 0)) as silent:  # takes the connection, says nothing
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = ["--server", url] if command == "new" else [format_invite(url, OTHER_KEY)]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
        environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(store)}
        asking = subprocess.Popen(
            [sys.executable, "-m", "instantroom", command, *args, "--label", "team"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
        )  # fmt: skip
        silent.settimeout(30)
        waiting, _ = silent.accept()  # it asks the relay now, its label looked at
        with waiting:
            other = KeyStore.open(store, PASSWORD)
            other.add_room(StoredRoom(make_minikey(secrets.randbelow), "team", url, 0))
            other.save()
    out, err = asking.communicate(timeout=60)  # the relay hung up: out of reach, it goes on
    assert asking.returncode == 2, out + err
    assert "labelled 'team' already" in err
    assert [room.label for room in KeyStore.open(store, PASSWORD).rooms] == ["team"]


def test_a_room_key_given_for_a_label_is_not_echoed(tmp_path: Path) -> None:
    """``--room KEY`` (or a key where any command takes a room): the key is not printed
    back; what was wrong is said, and where a key goes."""
    store = tmp_path / "store.json"
    _store_with_a_room(store)
    key = make_minikey(secrets.randbelow)
    grouped = " ".join(key[i : i + 5] for i in range(0, 30, 5))
    for given in (key, grouped, key[:24]):  # whole, in groups, or cut short
        for args in (["send", "--room", given, "hi"], ["listen", "--room", given], ["qr", given]):
            result = cli(store, *args, check=False)
            assert result.returncode == 2
            assert "it may hold a room key" in result.stderr
            assert "--key" in result.stderr
            for shown in (result.stdout, result.stderr):
                assert key[:12] not in shown.replace(" ", "")
    # A label that is not a key is named, as before.
    result = cli(store, "send", "--room", "nosuch", "hi", check=False)
    assert "No stored room is labelled 'nosuch'" in result.stderr


def test_new_join_and_rooms_print_the_relay_without_its_user_name_and_password(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """A relay address may hold a user name and password (a proxy's): they are stored,
    for connecting, but new, join and rooms printed them with the address."""
    store = tmp_path / "store.json"
    host = f"127.0.0.1:{relay.port}"
    server = f"http://someone:hunter2@{host}/"
    nowhere = "http://someone:hunter2@127.0.0.1:9/"
    printed = [
        cli(store, "new", "--label", "made", "--server", server),
        cli(store, "new", "--label", "away", "--server", nowhere),  # out of reach
        cli(store, "join", OTHER_KEY, "--label", "joined", "--server", server, "--no-chat"),
        cli(store, "join", make_minikey(secrets.randbelow), "--server", nowhere, "--no-chat"),
        cli(store, "rooms"),
        cli(store, "rooms", "--offline"),
    ]
    assert f"Room 'made' on http://{host}/" in printed[0].stdout
    assert "The relay http://127.0.0.1:9/ is out of reach" in printed[1].stderr
    assert f"Joined room 'joined' on http://{host}/" in printed[2].stdout
    assert "on http://127.0.0.1:9/, but the relay is out of reach" in printed[3].stdout
    assert f"http://{host}/" in printed[4].stdout
    for result in printed:
        assert "hunter2" not in result.stdout + result.stderr
        assert "someone" not in result.stdout + result.stderr
    # Kept in the store all the same: the client needs them to connect.
    assert {room.server for room in KeyStore.open(store, PASSWORD).rooms} == {server, nowhere}


@pytest.mark.parametrize(
    "path", [f"/{OTHER_KEY}", f"/chat/{format_minikey(OTHER_KEY)}/", f"/?k={OTHER_KEY}"]
)
def test_rooms_and_forget_never_print_a_room_key_held_in_a_stored_relay_address(
    tmp_path: Path, path: str
) -> None:
    """An invite link that lost its #, stored as a room's relay before such an address was
    refused: the key in its path is not shown (rooms, forget)."""
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    opened.add_room(StoredRoom(make_minikey(secrets.randbelow), "old", NOWHERE + path[1:], 0))
    opened.save()
    printed = [cli(store, "rooms", "--offline"), cli(store, "forget", "old")]
    assert "old" in printed[0].stdout
    assert "http://127.0.0.1:9/… (its path holds a room key)" in printed[0].stdout
    for result in printed:
        assert result.returncode == 0, result.stderr
        said = (result.stdout + result.stderr).replace(" ", "").replace("-", "")
        assert OTHER_KEY not in said


def chat_process(
    store: Path, stdin: int, stderr: int, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_PASSWORD": PASSWORD, "INSTANTROOM_KEYSTORE": str(store)}
    environ |= {"TERM": "xterm-256color"}
    # Without the check the chat ran on, never to end: the timeout fails the test.
    return subprocess.run(
        [sys.executable, "-m", "instantroom", "chat"], stdin=stdin, stdout=stdout,
        stderr=stderr, env=environ, timeout=30, check=False,
    )  # fmt: skip


def test_chat_without_a_terminal_says_so_and_exits_2(tmp_path: Path) -> None:
    """``chat < /dev/null``, or run from a script, ran silently at full CPU and never
    ended: it needs a terminal to read keys from and one to draw on (standard error, as
    Textual draws), and says so before asking for the password."""
    store = tmp_path / "store.json"
    _store_with_a_room(store)
    result = chat_process(store, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert result.returncode == 2
    assert b"needs a terminal" in result.stderr
    assert result.stdout == b""
    # Keys from a terminal, but the screen drawn into a pipe (chat 2>log): refused too.
    controller, terminal = pty.openpty()
    try:
        result = chat_process(store, stdin=terminal, stdout=terminal, stderr=subprocess.PIPE)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert b"needs a terminal" in result.stderr


def test_the_name_given_to_join_is_kept_for_the_next_send_and_env_still_wins(
    tmp_path: Path, relay: RelayProcess
) -> None:
    """``join --name`` is remembered: a later ``send --room`` without one goes by it, and
    so does the chat (``chosen_name``); INSTANTROOM_NAME, a setting of this shell, goes
    first, and another ``--name`` replaces the one kept."""
    from instantroom.client.connection import RoomClient
    from instantroom.protocol.kdf import DeviceKey

    store = tmp_path / "store.json"
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    cli(store, "join", format_invite(relay.url, key), "--label", "team", "--name", "Bob",
        "--no-chat")  # fmt: skip
    assert KeyStore.open(store, PASSWORD).name == "Bob"

    async def names_heard() -> list[str]:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "alice") as alice:
            await alice.join(room)
            runs: list[tuple[dict[str, str], tuple[str, ...]]] = [
                ({}, ()),
                ({"INSTANTROOM_NAME": "Env"}, ()),
                ({"INSTANTROOM_NAME": "Env"}, ("--name", "Carol")),
                ({}, ()),
            ]
            for env, extra in runs:
                await asyncio.to_thread(cli, store, "send", "--room", "team", *extra, "hi", env=env)
            heard = []
            async with asyncio.timeout(10):
                async for received in alice.messages():
                    heard.append(received.message.sender_name)
                    if len(heard) == len(runs):
                        return heard
            raise AssertionError("never")

    assert run(names_heard()) == ["Bob", "Env", "Carol", "Carol"]
    assert KeyStore.open(store, PASSWORD).name == "Carol"


def test_a_name_that_cannot_be_one_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    store = tmp_path / "store.json"
    key = make_minikey(secrets.randbelow)
    result = cli(store, "join", format_invite("http://127.0.0.1:9", key), "--name", "x" * 65,
                 "--no-chat", check=False)  # fmt: skip
    assert result.returncode == 2
    assert "A name is 1 to 64 bytes of UTF-8." in result.stderr
    assert not store.exists()
    cli(store, "join", format_invite("http://127.0.0.1:9", key), "--label", "team", "--no-chat")
    result = cli(store, "send", "--room", "team", "--name", "   ", "hi", check=False)
    assert result.returncode == 2
    assert "A name is 1 to 64 bytes" in result.stderr
    assert KeyStore.open(store, PASSWORD).name == ""


def test_send_with_a_new_name_sends_all_the_same_when_the_store_cannot_be_written(
    tmp_path: Path,
    relay: RelayProcess,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Keeping the name is a convenience: a store on read-only media (or changed by another
    program's password change) costs it, not the message."""
    import errno

    from instantroom import cli as cli_module

    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD, kdf={"name": "argon2id", "iterations": 1,
                                                   "lanes": 1, "memory_kib": 1024})  # fmt: skip
    opened.add_room(StoredRoom(make_minikey(secrets.randbelow), "team", relay.url, 0))
    opened.save()
    monkeypatch.setenv("INSTANTROOM_PASSWORD", PASSWORD)
    monkeypatch.setenv("INSTANTROOM_KEYSTORE", str(store))
    monkeypatch.delenv("INSTANTROOM_NAME", raising=False)

    def read_only(self: KeyStore) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(KeyStore, "_write", read_only)
    status = cli_module.main(["send", "--room", "team", "--name", "deploybot", "hi"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "the name could not be kept in the key store (Read-only file system)" in err


def test_two_passwords_that_differ_change_nothing_and_exit_2(tmp_path: Path) -> None:
    """As any mistyped input: status 2, one line, the store as it was (or none made)."""
    store = tmp_path / "store.json"
    _store_with_a_room(store)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    environ |= {"INSTANTROOM_KEYSTORE": str(store)}
    runs = [
        (["passwd"], f"{PASSWORD}\nnew password one\nnew password two\n"),
        (["new", "--keystore", str(tmp_path / "new.json")], "password one\npassword two\n"),
    ]
    for args, typed in runs:
        result = subprocess.run(
            [sys.executable, "-m", "instantroom", *args], input=typed,
            start_new_session=True,  # no terminal for getpass to open: it reads stdin
            capture_output=True, text=True, env=environ, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().endswith("the two passwords differ; nothing was changed.")
        assert "Traceback" not in result.stderr
    assert [room.label for room in KeyStore.open(store, PASSWORD).rooms] == ["team"]
    assert not (tmp_path / "new.json").exists()


def test_rooms_lists_a_room_whose_expiry_is_past_any_date(tmp_path: Path) -> None:
    """A room joined by its key alone takes the relay's expiry: one past the year 9999
    (2**53 - 1) made `rooms` crash for every listing after."""
    store = tmp_path / "store.json"
    opened = KeyStore.create(store, PASSWORD)
    opened.add_room(StoredRoom(OTHER_KEY, "far", NOWHERE, 2**53 - 1))
    opened.add_room(StoredRoom("S6c56bnXQiBjk9mqSYE7ykVQ7NzrRy", "near", NOWHERE, 0))
    opened.save()
    for offline in (["--offline"], []):
        result = cli(store, "rooms", *offline)
        (far,) = [line for line in result.stdout.splitlines() if line.startswith("far ")]
        assert "expires in more than 100 years" in far
        assert "near" in result.stdout
        assert "Traceback" not in result.stderr
