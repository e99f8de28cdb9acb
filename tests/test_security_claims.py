"""SECURITY.md's claims that no other test checks: what the Python client puts on the
wire, what an outsider learns from the relay's answers, and the page headers as written.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
import time
from pathlib import Path

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from instantroom.client.connection import RoomClient
from instantroom.protocol import frames
from instantroom.protocol.codes import SUBPROTOCOL, ErrorCode, FrameType
from instantroom.protocol.join import sign_join_proof
from instantroom.protocol.kdf import (
    LABEL_MESSAGE_KEY,
    LABEL_ROOM_SIGNING_KEY,
    DeviceKey,
    RoomKeys,
    hkdf_sha256,
    private_key_bytes,
)
from instantroom.protocol.minikey import format_minikey, make_minikey, root_secret
from instantroom.testing import (
    LOOPBACK,
    RawClient,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    run,
    running_relay,
)

SECURITY_MD = Path(__file__).resolve().parent.parent / "SECURITY.md"


class RecordingProxy:
    """Forwards loopback connections to the relay and keeps every byte each way."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.upstream = bytearray()  # client -> relay, as sent (frames masked)
        self.downstream = bytearray()  # relay -> client
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target)
        for source, sink, kept in (
            (reader, up_writer, self.upstream),
            (up_reader, writer, self.downstream),
        ):
            task = asyncio.create_task(self._pump(source, sink, kept))
            self._tasks.add(task)

    @staticmethod
    async def _pump(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, kept: bytearray
    ) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await source.read(65536):
                kept += data
                sink.write(data)
                await sink.drain()
        sink.transport.abort()


def what_the_client_sent(raw: bytes) -> tuple[Request, list[bytes]]:
    """The upgrade request and the unmasked payload of every frame in ``raw``."""
    server = ServerProtocol(subprotocols=[Subprotocol(SUBPROTOCOL)], max_size=None)
    server.receive_data(raw)
    events = server.events_received()
    request = events[0]
    assert isinstance(request, Request)
    server.send_response(server.accept(request))  # the frames that follow are read now
    server.receive_data(b"")  # no new bytes: resumes the parser, now past the handshake
    payloads = [
        bytes(event.data)
        for event in events[1:] + server.events_received()
        if isinstance(event, Frame) and event.opcode is Opcode.BINARY
    ]
    return request, payloads


def forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def test_the_python_client_sends_no_key_name_device_key_or_text(relay: RelayProcess) -> None:
    """The relay cannot read "a message, a name, a fingerprint or a device key": none of
    them, nor the room key or what is derived from it, is in the upgrade request or in a
    frame the terminal client sends (read unmasked) or receives."""
    key = make_minikey(secrets.randbelow)
    room = RoomKeys.from_minikey(key)
    alice = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    bob = DeviceKey.from_private_bytes(secrets.token_bytes(32))
    name, text = "alice-the-sender", "the plaintext that stays between members"

    async def scenario() -> tuple[bytes, bytes]:
        async with RecordingProxy(relay.port) as proxy:
            async with (
                RoomClient(f"http://{LOOPBACK}:{proxy.port}", alice, name) as sender,
                RoomClient(relay.url, bob, "bob-the-receiver") as receiver,
            ):
                await receiver.join(room)
                await sender.join(room)
                await sender.send_text(room.room_id, text)
                async for got in receiver.messages():
                    assert got.message.text == text
                    break
                # The envelope bob sends comes back down to alice through the proxy.
                await receiver.send_text(room.room_id, text)
                async for got in sender.messages():
                    assert got.message.sender_name == "bob-the-receiver"
                    break
            return bytes(proxy.upstream), bytes(proxy.downstream)

    upstream, downstream = run(scenario())
    request, payloads = what_the_client_sent(upstream)
    wire = [request.path.encode(), *(f"{k}: {v}".encode() for k, v in request.headers.raw_items())]
    wire += [*payloads, downstream]
    # The parse works: the room id and public key, which the relay must see, are there.
    assert any(room.room_id in p and room.public_key in p for p in payloads)
    assert any(p[:1] == bytes([FrameType.PUBLISH]) for p in payloads)

    root = root_secret(key)
    forbidden = [key.encode(), format_minikey(key).encode(), name.encode(), text.encode()]
    forbidden += [alice.fingerprint.encode(), b"bob-the-receiver", bob.fingerprint.encode()]
    for secret in (
        root,
        hkdf_sha256(root, LABEL_MESSAGE_KEY),
        hkdf_sha256(root, LABEL_ROOM_SIGNING_KEY),
        private_key_bytes(alice.private_key),
        alice.public_key,
        bob.public_key,
    ):
        forbidden += forms(secret)
    leaks = [f for f in forbidden if any(f in piece for piece in wire)]
    assert leaks == []


def test_an_outsider_cannot_tell_a_live_full_or_expired_room_from_none() -> None:
    """ "Before a valid join proof, the relay's answers do not depend on the room": a JOIN
    gets a challenge and a bad proof the same refusal, for a room that is open and full,
    one that expired (and that the relay refuses), and one nobody ever opened."""
    now = time.time_ns() // 1_000_000

    async def answers(
        outsider: RawClient, room: RoomKeys, expires_at_ms: int
    ) -> tuple[int, int, str, bool, list[frames.Frame]]:
        """What the relay says to JOIN (a challenge) and then a bad PROOF, and whatever
        else came before a PING's answer, without the random challenge itself."""
        challenge = await outsider.challenge(room, expires_at_ms)
        assert len(challenge) == 32
        forged = sign_join_proof(fresh_room().signing_key, room.room_id, challenge)
        await outsider.send(frames.Proof(room.room_id, forged))
        refused = await outsider.expect(frames.Error)
        same_room = refused.room_id == room.room_id
        return refused.code, refused.ref, refused.reason, same_room, await outsider.barrier()

    async def scenario(relay: RelayProcess) -> None:
        full, expired, unknown = fresh_room(), fresh_room(), fresh_room()
        async with (
            raw_client(relay.ws_url) as member,
            raw_client(relay.ws_url) as leaver,
            raw_client(relay.ws_url) as outsider,
            raw_client(relay.ws_url) as holder,
        ):
            await member.join(full, now + 3_600_000)
            await leaver.join(expired, time.time_ns() // 1_000_000 + 1_000)
            leaver.timeout = 10
            await leaver.expect_error(ErrorCode.ROOM_EXPIRED)
            # The relay knows each room's state: a key holder is refused for it...
            await holder.send(RawClient.proof(full, await holder.challenge(full)))
            await holder.expect_error(ErrorCode.ROOM_FULL)
            await holder.send(RawClient.proof(expired, await holder.challenge(expired)))
            await holder.expect_error(ErrorCode.ROOM_EXPIRED)
            # ...and an outsider hears the same whatever the room, with any expiry asked.
            for expiry in (0, now + 60_000, now - 60_000, now + 10**12):
                said = {
                    name: await answers(outsider, room, expiry)
                    for name, room in (("full", full), ("expired", expired), ("none", unknown))
                }
                assert said["full"] == said["expired"] == said["none"], said
                assert said["none"][0] == ErrorCode.PROOF_FAILED
            assert await member.barrier() == []  # and the room heard of nobody

    with running_relay("--members-per-room", "1") as relay:
        run(scenario(relay))
    assert_exited_cleanly(relay)


def documented_policy() -> str:
    """The Content-Security-Policy SECURITY.md says the relay sends."""
    text = " ".join(SECURITY_MD.read_text(encoding="utf-8").split())
    found = re.search(r"The relay sends, with every page: `([^`]+)`", text)
    assert found is not None, "SECURITY.md no longer quotes the policy"
    return found.group(1)


def test_every_response_carries_the_headers_security_md_states(relay: RelayProcess) -> None:
    """The policy, word for word as SECURITY.md quotes it, and the other headers it
    names, on the page and on everything else the relay answers over HTTP."""
    policy = documented_policy()
    text = " ".join(SECURITY_MD.read_text(encoding="utf-8").split())
    assert "`Referrer-Policy: no-referrer`, `X-Content-Type-Options: nosniff`" in text
    assert "`Cross-Origin-Opener-Policy: same-origin`" in text

    async def scenario() -> None:
        page = await http_request(relay.port, "/")
        assets = sorted(set(re.findall(rb'"(/assets/[^"]+)"', page.body)))
        assert assets, "the built web client names no script or style"
        paths = ["/", "/index.html", "/sw.js", "/healthz", "/metrics", "/no/such/file"]
        for path in paths + [asset.decode() for asset in assets]:
            headers = (await http_request(relay.port, path)).headers
            assert headers["content-security-policy"] == policy, path
            assert headers["referrer-policy"] == "no-referrer", path
            assert headers["x-content-type-options"] == "nosniff", path
            assert headers["cross-origin-opener-policy"] == "same-origin", path

    run(scenario())
