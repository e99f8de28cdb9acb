"""``send`` and ``listen`` as a script meets them: one exit status for each way they fail,
listed by --help, and a time limit that holds when the relay stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from instantroom.client.keystore import KeyStore
from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.kdf import RoomKeys
from instantroom.protocol.minikey import make_minikey
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    raw_client,
    run,
    running_relay,
)
from tests.client.test_cli import environment, instantroom, reaped, signals_at_default, typo_of
from tests.client.test_room_client import (
    FakeRelay,
    Frozen,
    Peer,
    joining_only,
    serving,
    silent,
)
from tests.client.test_rooms_cli import PASSWORD, cli


def closed_port() -> int:
    """A loopback port that nothing listens on (as far as a test can tell)."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
    return port


async def statuses_listed(command: str) -> set[int]:
    """The exit statuses that ``instantroom COMMAND --help`` lists."""
    status, out, _ = await instantroom(command, "--help")
    assert status == 0
    listed = out.partition("exit status:")[2]
    starts = (re.match(r"\s+(\d+(?:, \d+)*)\s", line) for line in listed.splitlines())
    return {int(n) for start in starts if start for n in start.group(1).split(", ")}


def test_each_way_send_fails_has_its_own_exit_status_listed_by_help(
    relay: RelayProcess,
) -> None:
    """Relay refused (1), mistyped key (2), relay out of reach (3), relay slow to take it
    (4), room full (5), room expired (6): a script tells "try later" from "give up".
    They were all 1 but the typo."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def send(server: str, the_key: str = key, limit: str = "5") -> tuple[int, str]:
        status, out, err = await instantroom(
            "send", "--server", server, "--key", the_key, "--timeout", limit, "hi"
        )
        assert out == ""  # stdout carries data only: send has none
        assert "Traceback" not in err
        return status, err

    async def scenario() -> dict[str, int]:
        seen: dict[str, int] = {}
        seen["refused"], _ = await send(f"{relay.url}/not/the/relay")
        seen["typo"], _ = await send(relay.url, typo_of(key))
        port = closed_port()
        seen["unreachable"], err = await send(f"http://user:s3cret@{LOOPBACK}:{port}", limit="1")
        # Why, too: the last try's reason (the password left out).
        assert f"The relay at {LOOPBACK}:{port} could not be reached: nothing answers" in err
        assert "s3cret" not in err
        async with FakeRelay(joining_only) as never_takes:
            seen["timeout"], err = await send(never_takes.url, limit="1")
        assert "did not take the message in time" in err
        with running_relay("--members-per-room", "1") as small:
            async with raw_client(small.ws_url) as member:
                await member.join(room)
                seen["full"], err = await send(small.url)
        assert "full" in err
        async with raw_client(relay.ws_url) as member:
            await member.join(room, int(time.time() * 1000) + 1000)
            # The relay tells its members once the room is over; then it refuses it.
            assert (await member.expect_error(ErrorCode.ROOM_EXPIRED)).room_id == room.room_id
        seen["expired"], err = await send(relay.url)
        assert "expired" in err
        assert {0, *seen.values()} <= await statuses_listed("send")
        return seen

    assert run(scenario()) == {
        "refused": 1,
        "typo": 2,
        "unreachable": 3,
        "timeout": 4,
        "full": 5,
        "expired": 6,
    }


def test_send_whose_relay_went_away_after_taking_the_publish_says_it_may_have_been_sent() -> None:
    """A relay reached, then gone before it said it took the message: exit 4 ("may still
    reach the room"), not 3 ("out of reach"). It was 3 whenever the connection was down at
    the deadline, and a script would send again, sure that nothing went."""
    key = make_minikey(secrets.randbelow)
    relay: FakeRelay

    async def takes_the_publish_then_vanishes(peer: Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            await peer.answer(await peer.recv())  # JOIN
            await peer.answer(await peer.recv())  # PROOF: JOINED
            assert isinstance(await peer.recv(), frames.Publish)
        assert relay._server is not None
        relay._server.close()  # the relay's host went away: nothing answers any more

    async def scenario() -> tuple[int, str]:
        nonlocal relay
        async with FakeRelay(takes_the_publish_then_vanishes) as relay:
            status, _, err = await instantroom(
                "send", "--server", relay.url, "--key", key, "--timeout", "3", "hi"
            )
        return status, err

    status, err = run(scenario())
    assert status == 4, err
    assert "did not take the message in time" in err


def test_send_never_let_into_the_room_says_nothing_was_sent() -> None:
    """Reached, but never let in (no JOINED): exit 4 said the message may have gone, and a
    careful script dropped it; nothing had been sent. It is 3, as out of reach."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> tuple[int, str]:
        async with FakeRelay(silent) as never_lets_in:
            status, _, err = await instantroom(
                "send", "--server", never_lets_in.url, "--key", key, "--timeout", "1", "hi"
            )
        return status, err

    status, err = run(scenario())
    assert status == 3, err
    assert "did not let this client into the room within 1 s (--timeout): nothing was sent" in err


def test_send_and_listen_say_when_this_computers_clock_is_far_from_the_relays(
    relay: RelayProcess,
) -> None:
    """A computer 10 minutes fast had every message it sent dropped by the others as
    dated in the future, and send said nothing: the relay took it (PROTOCOL.md 7)."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> tuple[tuple[int, str], tuple[int, str], str]:
        async with FakeRelay(serving, clock_off_by=-600) as behind:  # ours is 10 min fast
            status, _, err = await instantroom("send", "--server", behind.url, "--key", key, "hi")
            off = (status, err)
            listening = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instantroom", "listen", "--server", behind.url,
                "--key", key, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert listening.stderr is not None
            async with asyncio.timeout(20):
                said = ""
                while "listening in room" not in said:
                    said += (await listening.stderr.readline()).decode()
            listening.terminate()
            await listening.wait()
        status, _, err = await instantroom("send", "--server", relay.url, "--key", key, "hi")
        return off, (status, err), said

    (status, err), on_time, said = run(scenario())
    assert status == 0, err  # taken: sent all the same
    assert "warning: This computer's clock is 10 minutes fast" in err
    assert "clock is 10 minutes fast" in said
    assert on_time == (0, "")


def test_listen_tells_a_full_room_from_a_refused_one(relay: RelayProcess) -> None:
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)

    async def scenario() -> None:
        with running_relay("--members-per-room", "1") as small:
            async with raw_client(small.ws_url) as member:
                await member.join(room)
                async with asyncio.timeout(20):
                    status, out, err = await instantroom("listen", "--server", small.url,
                                                         "--key", key, "--json")  # fmt: skip
        assert (status, out) == (5, ""), err
        assert "full" in err
        status, _, _ = await instantroom("listen", "--server", f"{relay.url}/nope", "--key", key)
        assert status == 1
        assert {1, 2, 5, 6, 130, 141, 143} <= await statuses_listed("listen")

    run(scenario())


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "soon", "3301"])
def test_a_timeout_that_is_no_time_limit_is_refused(relay: RelayProcess, timeout: str) -> None:
    """``--timeout nan`` sent with no limit at all, ``--timeout 0`` gave up at once; past
    55 minutes (3,300 s) a message is given up as too old, and send exited 1 for it."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> tuple[int, str]:
        status, _, err = await instantroom(
            "send", "--server", relay.url, "--key", key, "--timeout", timeout, "hi"
        )
        return status, err

    status, err = run(scenario())
    assert status == 2
    assert "--timeout" in err


def test_send_keeps_to_its_timeout_when_the_relay_stops_answering() -> None:
    """Let in, then not a word more from the relay (a process stopped, a network gone):
    ``send --timeout 1`` took 11 seconds, 10 of them waiting for the answer to its close."""
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        frozen = Frozen()
        async with FakeRelay(frozen) as relay:
            try:
                started = time.monotonic()
                status, _, err = await instantroom(
                    "send", "--server", relay.url, "--key", key, "--timeout", "1", "hi"
                )
                took = time.monotonic() - started
            finally:
                frozen.thaw.set()
        assert status == 4, err
        assert took < 6, took

    run(scenario())


def test_listen_stops_at_once_on_sigterm_when_the_relay_stops_answering() -> None:
    key = make_minikey(secrets.randbelow)

    async def scenario() -> None:
        frozen = Frozen()
        async with FakeRelay(frozen) as relay:
            listener = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "instantroom", "listen", "--server", relay.url,
                "--key", key,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                env=environment(), preexec_fn=signals_at_default,
            )  # fmt: skip
            assert listener.stderr is not None
            async with reaped(listener):
                try:
                    async with asyncio.timeout(20):
                        assert b"listening" in await listener.stderr.readline()
                    started = time.monotonic()
                    listener.send_signal(signal.SIGTERM)
                    async with asyncio.timeout(20):
                        _, err = await listener.communicate()
                    took = time.monotonic() - started
                finally:
                    frozen.thaw.set()
        assert listener.returncode == 128 + signal.SIGTERM, err
        assert b"Traceback" not in err
        assert took < 5, took

    run(scenario())


def test_join_with_the_relay_out_of_reach_does_not_say_joined(tmp_path: Path) -> None:
    """Nothing answered: the room is stored (as ``new`` keeps one), and said to be."""
    key = make_minikey(secrets.randbelow)
    nowhere = f"http://{LOOPBACK}:{closed_port()}"
    result = cli(tmp_path / "store.json", "join", key, "--server", nowhere, "--no-chat")
    assert "Joined" not in result.stdout
    assert "out of reach" in result.stdout
    assert [room.key for room in KeyStore.open(tmp_path / "store.json", PASSWORD).rooms] == [key]
