"""Review of the command line as scripts use it: a blank message is refused, as the chat
refuses it, rather than sent as an empty one with exit status 0; listen says, as the chat
does, when it drops a message dated ahead of this computer's clock; an invite link that
lost its key is said to be one, not a mistyped key."""

from __future__ import annotations

import secrets
import signal
import time
from pathlib import Path

from instantroom.client.connection import RoomClient
from instantroom.protocol.kdf import DeviceKey, RoomKeys
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import RelayProcess, raw_client, run, text_publish
from tests.client.test_cli import instantroom, lines_until, start_listening, stop


def test_send_refuses_a_blank_message_and_sends_nothing(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        device = DeviceKey.from_private_bytes(secrets.token_bytes(32))
        async with RoomClient(relay.url, device, "carol") as carol:
            await carol.join(room)
            received = carol.messages()
            # `instantroom send "$MSG"` with MSG unset, or only spaces.
            for blank in ("", "  \n"):
                status, out, err = await instantroom(
                    "send", "--server", relay.url, "--key", key, blank
                )
                assert status == 2, err
                assert "Nothing to send" in err
                assert out == ""
            status, _, err = await instantroom("send", "--server", relay.url, "--key", key, "-",
                                               stdin=b"\n\n")  # fmt: skip
            assert status == 2, err
            status, _, err = await instantroom("send", "--server", relay.url, "--key", key, "real")
            assert status == 0, err
            # The first message the room got is the real one: no empty one before it.
            assert (await anext(received)).message.text == "real"

    run(scenario())


def test_listen_says_once_that_it_dropped_messages_dated_ahead(relay: RelayProcess) -> None:
    """A member whose clock is 12 minutes fast is dropped by everyone (PROTOCOL.md 7): the
    chat says so, listen printed nothing, and a bot's owner did not know why it heard
    nothing from that member."""
    key = make_minikey(secrets.randbelow)
    keys = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    fast = time.time_ns() // 1_000_000 + 12 * 60_000

    async def scenario() -> None:
        listener = await start_listening("--server", relay.url, "--key", key)
        try:
            async with raw_client(relay.ws_url) as raw:
                await raw.join(keys)
                for ref in range(1, 4):
                    await raw.send(text_publish(keys, alice, ref, f"fast {ref}", at_ms=fast))
                await raw.send(text_publish(keys, alice, 4, "on time"))
                lines = await lines_until(listener, b"on time")
        finally:
            await stop(listener, signal.SIGTERM)
        assert not any(b"fast " in line for line in lines)
        assert listener.stderr is not None
        err = (await listener.stderr.read()).decode()
        said = "A message dated 12 minutes ahead of this computer's clock was dropped"
        assert err.count(said) == 1, err

    run(scenario())


def test_a_link_that_lost_its_key_is_said_to_be_one(tmp_path: Path) -> None:
    """An invite link whose ``#KEY`` was cut off (a chat app, or the address bar once the
    web client took the key out of it) was read as a mistyped key: "A room key has 30
    characters; this one has 20". join stores nothing, and makes no key store for it."""
    store = tmp_path / "store.json"
    env = {"INSTANTROOM_KEYSTORE": str(store), "INSTANTROOM_PASSWORD": "a long password"}

    async def scenario() -> None:
        for command in (
            ("join", "https://relay.example/", "--no-chat"),
            ("join", "relay.example/", "--no-chat"),
            ("send", "--key", "https://relay.example/", "hi"),
            ("listen", "--key", "https://relay.example/"),
        ):
            status, out, err = await instantroom(*command, env=env)
            assert status == 2, (command, err)
            assert "This link holds no room key" in err, (command, err)
            assert "30 characters" not in err
            assert out == ""
        assert not store.exists()

    run(scenario())
