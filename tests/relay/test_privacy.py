"""The relay keeps nothing: it writes no file, and its logs (even at debug level) hold no
key, plaintext, ciphertext, room id or client address unless the operator asks for ids.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import stat
import time
from pathlib import Path

from instantroom.client.connection import RoomClient
from instantroom.protocol import frames
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    assert_exited_cleanly,
    raw_client,
    run,
    running_relay,
)

TEXTS = ["the plaintext nobody may log", "zweite Nachricht, auch geheim"]


def open_for_writing(pid: int) -> list[str]:
    """Regular files the process has open for writing (from /proc/PID/fd and fdinfo)."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            mode = os.stat(f"/proc/{pid}/fd/{fd}").st_mode
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except FileNotFoundError:  # closed meanwhile
            continue
        flags = int(
            next(line for line in info.splitlines() if line.startswith("flags:")).split()[1], 8
        )
        if stat.S_ISREG(mode) and flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND):
            found.append(target)
    return found


def secrets_of(key: str, room: RoomKeys, device: DeviceKey) -> dict[str, str]:
    """Everything the logs must not show, in the forms a log line might show it."""
    forbidden = {
        "key": key,
        "room id": room.room_id.hex(),
        "room id, short": room.room_id.hex()[:16],
        "room id, shorter": room.room_id.hex()[:8],
        "room id, base64": base64.b64encode(room.room_id).decode()[:16],
        "room id, urlsafe": base64.urlsafe_b64encode(room.room_id).decode()[:16],
        "room public key": room.public_key.hex()[:16],
        "message key": room.message_key.hex()[:16],
        "device key": device.public_key.hex()[:16],
        "fingerprint": device.fingerprint,
        "client address": LOOPBACK,
    }
    forbidden.update({f"plaintext {i}": text for i, text in enumerate(TEXTS)})
    return forbidden


def chat(relay: RelayProcess, key: str, expiring: RoomKeys) -> tuple[list[bytes], list[DeviceKey]]:
    """Two members chat, a third watches raw frames; return the ciphertexts it saw and the
    members' device keys.

    Also: a handshake left half-way (dropped at the handshake timeout) and a room that
    expires, so that the relay has ids and addresses to log if it ever would.
    """
    room = RoomKeys.from_minikey(key)

    alice_device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    bob_device = DeviceKey.from_private_bytes(secrets.token_bytes(32))

    async def scenario() -> list[bytes]:
        async with (
            RoomClient(relay.url, alice_device, "alice") as alice,
            RoomClient(relay.url, bob_device, "bob") as bob,
            raw_client(relay.ws_url) as watcher,
        ):
            await alice.join(room)
            await bob.join(room)
            await watcher.join(room)
            await watcher.join(expiring, time.time_ns() // 1_000_000 + 1000)
            for text in TEXTS:
                await alice.send_text(room.room_id, text)
            received = []
            async for got in bob.messages():
                received.append(got.message.text)
                if len(received) == len(TEXTS):
                    break
            assert received == TEXTS
            ciphertexts: list[bytes] = []
            watcher.timeout = 5
            while len(ciphertexts) < len(TEXTS):
                frame = await watcher.recv()
                if isinstance(frame, frames.Deliver):
                    ciphertexts.append(frame.envelope)
            _, half = await asyncio.open_connection(LOOPBACK, relay.port)
            half.write(b"GET /ws HTTP/1.1\r\n")
            await asyncio.to_thread(relay.wait_for_log, r"event=room\.expired", 5)
            await asyncio.to_thread(relay.wait_for_log, r"event=connection\.dropped", 5)
            half.close()
            assert open_for_writing(relay.pid) == []
            return ciphertexts

    return run(scenario()), [alice_device, bob_device]


def test_the_relay_writes_no_file_and_logs_no_secret(tmp_path: Path) -> None:
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for directory in (cwd, home, tmp):
        directory.mkdir()
    key = make_minikey(secrets.randbelow)
    room, expiring = RoomKeys.from_minikey(key), RoomKeys.from_root(secrets.token_bytes(32))
    env = {"HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"}
    flags = ("--log-level", "debug", "--handshake-timeout", "1")
    with running_relay(*flags, env=env, cwd=cwd) as relay:
        ciphertexts, devices = chat(relay, key, expiring)
    assert_exited_cleanly(relay)
    for directory in (cwd, home, tmp):
        assert list(directory.iterdir()) == [], directory

    log = relay.log_text()
    assert "event=room.expired" in log
    assert "event=connection.dropped" in log
    forbidden: dict[str, str] = {}
    for device in devices:
        for each in (room, expiring):
            forbidden.update(
                {
                    f"{name} ({device.fingerprint})": v
                    for name, v in secrets_of(key, each, device).items()
                }
            )
    for number, ciphertext in enumerate(ciphertexts):
        forbidden[f"ciphertext {number}"] = ciphertext[20:36].hex()
        forbidden[f"ciphertext {number}, base64"] = base64.b64encode(ciphertext[21:45]).decode()
    leaks = {name: value for name, value in forbidden.items() if value in log}
    assert leaks == {}, log


def test_with_log_ids_the_operator_sees_room_ids_and_addresses(tmp_path: Path) -> None:
    """The other side of the coin, and proof that the check above can fail."""
    key = make_minikey(secrets.randbelow)
    expiring = RoomKeys.from_root(secrets.token_bytes(32))
    flags = ("--log-ids", "--handshake-timeout", "1")
    with running_relay(*flags) as relay:
        chat(relay, key, expiring)
    assert_exited_cleanly(relay)
    log = relay.log_text()
    assert expiring.room_id.hex()[:16] in log
    assert LOOPBACK in log
    assert key not in log
    assert not any(text in log for text in TEXTS)
