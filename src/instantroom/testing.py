"""Helpers for testing against a real relay: the relay process, raw clients, plain HTTP.

    with running_relay("--max-frame-size", "4096") as relay:
        async def scenario() -> None:
            async with raw_client(relay.ws_url) as alice:
                await alice.join(room)
                frames_before_pong = await alice.barrier()
        asyncio.run(scenario())
    assert relay.returncode == 0

``running_relay`` starts ``python -m instantroom serve`` on 127.0.0.1 with a free port,
reads the port from its ``event=relay.started`` log line, and keeps everything the
process writes (``relay.output``). On exit it sends SIGTERM and waits.

``run`` is ``asyncio.run`` with a deadline; ``TcpProxy`` sits between a client and the
relay and can lose what the relay says, then cut the connection.

``RawClient`` speaks frames, not messages: it sends any bytes as one binary WebSocket
message and decodes what the relay answers. ``barrier()`` is the way to wait: the relay
answers a PING after it has handled every earlier frame of the connection, so the frames
that arrive before its PONG are all the relay had to say until then.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from .protocol import frames
from .protocol.codes import SUBPROTOCOL
from .protocol.envelope import Kind, new_message, seal_envelope
from .protocol.join import sign_join_proof
from .protocol.kdf import DeviceKey, RoomKeys

__all__ = [
    "LOOPBACK",
    "TIMEOUT",
    "Closed",
    "HttpResponse",
    "RawClient",
    "RelayProcess",
    "TcpProxy",
    "UnexpectedFrame",
    "assert_exited_cleanly",
    "fresh_room",
    "http_request",
    "raw_client",
    "read_response_head",
    "run",
    "running_relay",
    "upgrade_request",
]

LOOPBACK = "127.0.0.1"
# How long any one wait may take before a helper gives up: a broken relay never hangs a test.
TIMEOUT = 5.0
_STARTED = re.compile(r"event=relay\.started\b.*\bport=(\d+)")
F = TypeVar("F", bound=frames.Frame)
T = TypeVar("T")


class UnexpectedFrame(AssertionError):
    """The relay sent something other than what the test expected."""


# The relay process


@dataclass
class RelayProcess:
    """A running ``instantroom serve``. ``output`` is its stderr (and stdout), as lines."""

    process: subprocess.Popen[bytes]
    port: int = 0
    output: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)
    _reading: bool = field(default=True, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}/ws"

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def problems(self) -> list[str]:
        """Lines of output that tell of a crash or an unhandled error."""
        signs = ("Traceback", "level=error", "Exception", "exception", "Task was destroyed")
        with self._changed:
            return [line for line in self.output if any(sign in line for sign in signs)]

    def log_text(self) -> str:
        with self._changed:
            return "".join(self.output)

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> str:
        """Wait until ``count`` lines matching the regular expression ``pattern`` are
        logged; return the ``count``-th."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self.output if regex.search(line)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reading):
                    raise TimeoutError(f"the relay never logged {pattern!r}:\n{self.log_text()}")
                self._changed.wait(left)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait for the exit status (killing it if it outstays ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace")
            with self._changed:
                self.output.append(line)
                if not self.port and (match := _STARTED.search(line)):
                    self.port = int(match.group(1))
                self._changed.notify_all()
        with self._changed:
            self._reading = False
            self._changed.notify_all()


@contextlib.contextmanager
def running_relay(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    port: int = 0,
    startup_timeout: float = 15.0,
) -> Iterator[RelayProcess]:
    """Run ``instantroom serve --host 127.0.0.1 --port PORT *args`` for the ``with`` block.

    The environment is this process's without its INSTANTROOM_* variables, updated with
    ``env``. On exit the relay gets SIGTERM; ``returncode`` then holds its exit status.
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    # A relay just started tells clients so, and what they send waits the rejoin grace
    # (12 s) for members reconnecting: tests of that say it; the others start at once.
    environ["INSTANTROOM_SAY_UPTIME_FOR"] = "0"
    environ.update(env or {})
    command = [
        sys.executable,
        "-m",
        "instantroom",
        "serve",
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        *args,
    ]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=environ,
        cwd=cwd,
    )
    relay = RelayProcess(process)
    reader = threading.Thread(target=relay._read, name="relay-output", daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + startup_timeout
        with relay._changed:
            while not relay.port:
                left = deadline - time.monotonic()
                if left <= 0 or not relay._reading:
                    raise RuntimeError(f"the relay did not start:\n{''.join(relay.output)}")
                relay._changed.wait(left)
        yield relay
    finally:
        try:
            relay.terminate()
        finally:
            reader.join(5.0)
            if process.stdout is not None:
                process.stdout.close()


def assert_exited_cleanly(relay: RelayProcess) -> None:
    """The relay, now stopped, exited 0 and logged no crash."""
    assert relay.returncode == 0, f"exit status {relay.returncode}:\n{relay.log_text()}"
    assert relay.problems() == [], relay.log_text()


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """``asyncio.run(coroutine)``, cancelled after ``timeout`` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coroutine

    return asyncio.run(bounded())


def fresh_room() -> RoomKeys:
    """A room of a fresh random root secret."""
    return RoomKeys.from_root(secrets.token_bytes(32))


def text_publish(
    room: RoomKeys, sender: DeviceKey, ref: int, text: str, *, name: str = "alice",
    at_ms: int | None = None,
) -> bytes:  # fmt: skip
    """A PUBLISH of ``text`` in ``room``, sealed by ``sender`` as ``name``, stamped
    ``at_ms`` (now by default): what a member sends, for a test to send, or send again."""
    return member_publish(room, sender, ref, Kind.TEXT, text.encode(), name=name, at_ms=at_ms)


def member_publish(
    room: RoomKeys, sender: DeviceKey, ref: int, kind: int, body: bytes, *,
    name: str = "alice", at_ms: int | None = None,
) -> bytes:  # fmt: skip
    """A PUBLISH of a message of any ``kind`` and ``body``, sealed as ``text_publish``
    seals one: a member may send kinds and bodies no reference client sends."""
    at = time.time_ns() // 1_000_000 if at_ms is None else at_ms
    message = new_message(sender, name, kind, body, token_bytes=secrets.token_bytes, now_ms=at)
    envelope = seal_envelope(room, sender, message, secrets.token_bytes(12))
    return frames.encode_frame(frames.Publish(ref, room.room_id, envelope))


# Plain HTTP


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def upgrade_request(
    port: int,
    path: str = "/ws",
    *,
    origin: str | None = None,
    subprotocol: str | None = SUBPROTOCOL,
    host: str | None = None,
) -> bytes:
    """A well-formed WebSocket upgrade request, as bytes for a raw TCP socket."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host or f'{LOOPBACK}:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + _websocket_key(),
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocol:
        lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
    if origin:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _websocket_key() -> str:
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP response: {status_line!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def response_status(port: int, request: bytes) -> int:
    """Send ``request`` on a fresh TCP connection to the relay on ``port``; return the
    status of its answer."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        status, _ = await read_response_head(reader)
        return status
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send_raw(port: int, data: bytes) -> bytes:
    """Write ``data`` at once on a fresh TCP connection to the relay on ``port``; return
    all it answers before EOF (within ``TIMEOUT``)."""
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await reader.read(65536):
                    chunks.append(chunk)
        return b"".join(chunks)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_response_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read an HTTP response's status and headers from a raw socket."""
    async with asyncio.timeout(TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    return _parse_head(head[:-4])


async def http_request(
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> HttpResponse:
    """One HTTP/1.1 request on its own connection, read to the end of the response."""
    async with asyncio.timeout(TIMEOUT):
        return await _http_request(port, path, method, headers or {})


async def _http_request(
    port: int, path: str, method: str, headers: Mapping[str, str]
) -> HttpResponse:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        fields = {"Host": f"{LOOPBACK}:{port}", "Connection": "close", **headers}
        request = f"{method} {path} HTTP/1.1\r\n"
        request += "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        writer.write((request + "\r\n").encode("latin-1"))
        await writer.drain()
        status, response_headers = await read_response_head(reader)
        length = response_headers.get("content-length")
        body = await (reader.readexactly(int(length)) if length is not None else reader.read())
        return HttpResponse(status, response_headers, body)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# A TCP proxy that can lose what the relay says, then cut the connection


class TcpProxy:
    """Forwards loopback TCP connections to ``port``; can swallow what comes back.

    While ``swallowing`` is set, bytes from the relay to the client are dropped (the
    relay believes them sent). ``cut()`` closes every connection through the proxy and
    stops swallowing; new connections go through as usual.

        async with TcpProxy(relay.port) as proxy:
            client = RoomClient(f"http://127.0.0.1:{proxy.port}", ...)
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.swallowing = False
        self.accepted = 0  # connections made through the proxy so far
        self._accepting = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.cut()
        await self._server.wait_closed()

    async def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self.swallowing = False
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def wait_accepted(self, count: int) -> None:
        """Wait until ``count`` connections have been made through the proxy."""
        async with self._accepting:
            await self._accepting.wait_for(lambda: self.accepted >= count)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self._accepting:
            self.accepted += 1
            self._accepting.notify_all()
        upstream_reader, upstream = await asyncio.open_connection(LOOPBACK, self.target)
        self._writers |= {writer, upstream}
        for source, sink, downstream in (
            (reader, upstream, False),
            (upstream_reader, writer, True),
        ):
            pump = asyncio.create_task(self._pump(source, sink, downstream))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, downstream: bool
    ) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            while data := await source.read(65536):
                if not (downstream and self.swallowing):
                    sink.write(data)
                    await sink.drain()
        sink.transport.abort()


# A raw-frame WebSocket client


@dataclass(frozen=True)
class Closed:
    """How a connection ended: the close code the relay sent (1006: none), and what came
    before it."""

    code: int
    reason: str
    frames: list[frames.Frame]


class RawClient:
    """One WebSocket connection that sends and receives relay frames as they are."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        # Each receive gives up after this many seconds; raise it for a longer wait.
        self.timeout = TIMEOUT

    async def send(self, frame: frames.Frame | bytes | str) -> None:
        """Send a frame, or any bytes as one binary message (a ``str``: a text message)."""
        data = frame if isinstance(frame, bytes | str) else frames.encode_frame(frame)
        await self.ws.send(data)

    async def recv_bytes(self) -> bytes:
        async with asyncio.timeout(self.timeout):
            data = await self.ws.recv()
        if isinstance(data, str):
            raise UnexpectedFrame(f"the relay sent a text message: {data!r}")
        return data

    async def recv(self) -> frames.Frame:
        return frames.decode_frame(await self.recv_bytes())

    async def expect(self, kind: type[F]) -> F:
        """The next frame, which must be a ``kind``."""
        frame = await self.recv()
        if not isinstance(frame, kind):
            raise UnexpectedFrame(f"expected {kind.__name__}, got {frame!r}")
        return frame

    async def expect_error(self, code: int) -> frames.Error:
        error = await self.expect(frames.Error)
        if error.code != code:
            raise UnexpectedFrame(f"expected error code {code}, got {error!r}")
        return error

    async def barrier(self) -> list[frames.Frame]:
        """PING, and return every frame that came before its PONG."""
        token = secrets.randbits(63)
        await self.send(frames.Ping(token))
        before: list[frames.Frame] = []
        async with asyncio.timeout(self.timeout):
            while True:
                frame = await self.recv()
                if frame == frames.Pong(token):
                    return before
                before.append(frame)

    async def challenge(self, room: RoomKeys, expires_at_ms: int = 0) -> bytes:
        """Send JOIN for ``room``; return the relay's challenge."""
        await self.send(frames.Join(room.room_id, room.public_key, expires_at_ms))
        challenge = await self.expect(frames.Challenge)
        if challenge.room_id != room.room_id:
            raise UnexpectedFrame(f"a challenge for another room: {challenge!r}")
        return challenge.challenge

    @staticmethod
    def proof(room: RoomKeys, challenge: bytes) -> frames.Proof:
        return frames.Proof(
            room.room_id, sign_join_proof(room.signing_key, room.room_id, challenge)
        )

    async def join(self, room: RoomKeys, expires_at_ms: int = 0) -> frames.Joined:
        """JOIN, answer the challenge, and return the JOINED frame."""
        challenge = await self.challenge(room, expires_at_ms)
        await self.send(self.proof(room, challenge))
        joined = await self.expect(frames.Joined)
        if joined.room_id != room.room_id:
            raise UnexpectedFrame(f"joined another room: {joined!r}")
        return joined

    async def closed(self) -> Closed:
        """Read until the relay closes the connection; the close and the frames before."""
        before: list[frames.Frame] = []
        async with asyncio.timeout(self.timeout):
            try:
                while True:
                    before.append(await self.recv())
            except ConnectionClosed as exc:
                rcvd = exc.rcvd
                return Closed(rcvd.code if rcvd else 1006, rcvd.reason if rcvd else "", before)


@contextlib.asynccontextmanager
async def raw_client(url: str, **options: Any) -> AsyncIterator[RawClient]:
    """A ``RawClient`` on the relay at ``url`` (``ws://host:port/ws``).

    No keepalive pings, no compression, frames of any size; ``options`` go to
    ``websockets.asyncio.client.connect``.
    """
    settings: dict[str, Any] = {
        "subprotocols": [Subprotocol(SUBPROTOCOL)],
        "compression": None,
        "max_size": None,
        "ping_interval": None,
        "open_timeout": 5,
        "close_timeout": 2,
        "proxy": None,
        **options,
    }
    async with connect(url, **settings) as ws:
        yield RawClient(ws)


@contextlib.contextmanager
def fixed_answer(status: int, body: bytes, content_type: str, port: int = 0) -> Iterator[int]:
    """A plain HTTP server on loopback ``port`` (0: a free one) that answers every GET with
    ``status`` and ``body``: a relay of another build (404), a proxy whose relay is down
    (502). Yields its port."""

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # no line on standard error per request

    server = ThreadingHTTPServer((LOOPBACK, port), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
