"""Load generator: R rooms x M members x S senders, against InstantRoom's relay and the
baseline (benchmarks/baseline_relay.py), in the same run, on loopback.

    python benchmarks/loadgen.py                 # the full comparison, as in README.md
    python benchmarks/loadgen.py --quick         # a short smoke run

For each relay it reports delivered messages per second, end-to-end latency p50/p99/max,
losses, the relay's CPU time per delivered message and the kernel's part of it (from
/proc/PID/stat), and its memory per idle joined connection (RSS growth over 10,000 idle
connections).

Clients are asyncio protocols around websockets' sans-I/O ClientProtocol, so that one
generator process can offer well over 100,000 deliveries/s. Senders send at a fixed rate;
the relay cannot read envelopes, so the generator puts its send time and a sequence
number in the envelope's bytes instead of encrypting (the relay's work is the same).
Every run is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import re
import resource
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from instantroom.protocol import frames
from instantroom.protocol.codes import SUBPROTOCOL, FrameType
from instantroom.protocol.join import sign_join_proof
from instantroom.protocol.kdf import RoomKeys
from instantroom.protocol.minikey import make_minikey

ENVELOPE_SIZE = 1 + 12 + 256 + 16  # the smallest real envelope: one short chat line
_STAMP = struct.Struct(">QQ")  # send time (monotonic ns), message number
HERE = Path(__file__).resolve().parent


class Link(asyncio.Protocol):
    """One client connection; ``on_message`` gets each binary message it receives."""

    def __init__(
        self, uri: str, subprotocol: str | None, on_message: Callable[[Link, bytes], None]
    ) -> None:
        self.ws = ClientProtocol(
            parse_uri(uri),
            subprotocols=[Subprotocol(subprotocol)] if subprotocol else None,
            max_size=None,
        )
        self.on_message = on_message
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.room: RoomKeys | None = None
        # A receiver that is not sampled for latency only counts bytes once measuring:
        # every delivery has the same size, and parsing them all would make the
        # generator, not the relay, the bottleneck.
        self.count_into: Tally | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._write()

    def data_received(self, data: bytes) -> None:
        if self.count_into is not None:
            if self.count_into.measuring:
                self.count_into.counted_bytes += len(data)
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self.opened.set_exception(self.ws.handshake_exc)
                else:
                    self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                self.on_message(self, bytes(event.data))
        self._write()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.joined):
            if not future.done():
                future.set_exception(ConnectionError("closed"))

    def send(self, data: bytes) -> None:
        self.ws.send_binary(data)
        self._write()

    def _write(self) -> None:
        chunks = [c for c in self.ws.data_to_send() if c]
        if chunks and self.transport is not None:
            self.transport.write(b"".join(chunks))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@dataclass
class Tally:
    sent: int = 0
    delivered: int = 0
    errors: int = 0
    latencies_ns: list[int] = field(default_factory=list)
    measuring: bool = False
    counted_bytes: int = 0
    wire_size: int = 1

    @property
    def total_delivered(self) -> int:
        return self.delivered + self.counted_bytes // self.wire_size


class Dialect:
    """How to talk to one kind of relay."""

    subprotocol: str | None = None

    def uri(self, port: int, room: int) -> str:
        raise NotImplementedError

    async def join(self, link: Link, room: RoomKeys) -> None:
        link.joined.set_result(None)

    def message(self, link: Link, ref: int, payload: bytes) -> bytes:
        raise NotImplementedError

    def payload_offset(self, data: bytes) -> int | None:
        """Where the envelope starts in a received frame, or None if not a delivery."""
        raise NotImplementedError

    def delivery_size(self) -> int:
        """Bytes on the wire of one delivery (the same for every one)."""
        raise NotImplementedError


class InstantRoomDialect(Dialect):
    subprotocol = SUBPROTOCOL

    def uri(self, port: int, room: int) -> str:
        return f"ws://127.0.0.1:{port}/ws"

    async def join(self, link: Link, room: RoomKeys) -> None:
        link.room = room
        link.send(frames.encode_frame(frames.Join(room.room_id, room.public_key, 0)))
        await link.joined

    def message(self, link: Link, ref: int, payload: bytes) -> bytes:
        assert link.room is not None
        return b"\x10" + struct.pack(">I", ref) + link.room.room_id + payload

    def payload_offset(self, data: bytes) -> int | None:
        kind = data[0]
        if kind == FrameType.DELIVER:
            return 33
        return None

    def delivery_size(self) -> int:
        return len(Frame(Opcode.BINARY, bytes(33 + ENVELOPE_SIZE)).serialize(mask=False))


class BaselineDialect(Dialect):
    def uri(self, port: int, room: int) -> str:
        return f"ws://127.0.0.1:{port}/room/{room}"

    def message(self, link: Link, ref: int, payload: bytes) -> bytes:
        # The same bytes on the wire as an InstantRoom PUBLISH: header, room id, envelope.
        return bytes(37) + payload

    def payload_offset(self, data: bytes) -> int | None:
        return 37

    def delivery_size(self) -> int:
        return len(Frame(Opcode.BINARY, bytes(37 + ENVELOPE_SIZE)).serialize(mask=False))


def instantroom_handler(dialect: Dialect, tally: Tally) -> Callable[[Link, bytes], None]:
    def on_message(link: Link, data: bytes) -> None:
        kind = data[0]
        if (
            kind == FrameType.CHALLENGE
            and link.room is not None
            and isinstance(dialect, InstantRoomDialect)
        ):
            challenge = data[33:65]
            signature = sign_join_proof(link.room.signing_key, link.room.room_id, challenge)
            link.send(frames.encode_frame(frames.Proof(link.room.room_id, signature)))
            return
        if kind == FrameType.JOINED and isinstance(dialect, InstantRoomDialect):
            if not link.joined.done():
                link.joined.set_result(None)
            return
        if kind == FrameType.ERROR and isinstance(dialect, InstantRoomDialect):
            tally.errors += 1
            return
        offset = dialect.payload_offset(data)
        if offset is None:
            return
        sent_ns, _number = _STAMP.unpack_from(data, offset + 13)
        if tally.measuring:
            tally.delivered += 1
            tally.latencies_ns.append(time.monotonic_ns() - sent_ns)

    return on_message


# the relay under test, as a child process


@dataclass(frozen=True)
class CpuTimes:
    """A process's CPU seconds, in user space and in the kernel on its behalf."""

    user: float
    kernel: float

    @property
    def total(self) -> float:
        return self.user + self.kernel

    def __add__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user + other.user, self.kernel + other.kernel)

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.kernel - other.kernel)


def process_cpu(pid: int) -> CpuTimes:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return CpuTimes(user=int(fields[11]) / ticks, kernel=int(fields[12]) / ticks)


class RelayProcess:
    def __init__(self, kind: str, extra: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        if self.kind == "instantroom":
            command = [
                sys.executable, "-m", "instantroom", "serve", "--host", "127.0.0.1", "--port", "0",
                "--messages-per-second", "1000000", "--message-burst", "1000000",
                "--connections-per-address", "20000", "--members-per-room", "1000",
                "--handshake-timeout", "600", "--idle-timeout", "600", "--ping-interval", "600",
                "--send-buffer", "16777216", *self.extra,
            ]  # fmt: skip
            pattern = re.compile(rb"event=relay.started .*port=(\d+)")
            stream = "stderr"
        else:
            command = [sys.executable, str(HERE / "baseline_relay.py"), "0"]
            pattern = re.compile(rb"port=(\d+)")
            stream = "stdout"
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
            stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
        )
        pipe = self.proc.stdout if stream == "stdout" else self.proc.stderr
        assert pipe is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = pipe.readline()
            found = pattern.search(line)
            if found:
                self.port = int(found.group(1))
                return
        raise RuntimeError(f"{self.kind} relay did not start")

    @property
    def ports(self) -> list[int]:
        return [self.port]

    def cpu_seconds(self) -> CpuTimes:
        assert self.proc is not None
        return process_cpu(self.proc.pid)

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisProcess:
    """A throwaway redis-server on a free loopback port, for the backplane runs."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def cpu_seconds(self) -> CpuTimes:
        return process_cpu(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Fleet:
    """Several InstantRoom relays on one Redis; CPU counts the relays and Redis."""

    def __init__(self, size: int) -> None:
        self.kind = f"{size} relay{'s' if size > 1 else ''} + redis"
        self.redis = RedisProcess()
        self.relays = [
            RelayProcess("instantroom", ("--backplane", self.redis.url)) for _ in range(size)
        ]

    def start(self) -> None:
        for relay in self.relays:
            relay.start()
        time.sleep(0.5)  # let each relay's backplane connect

    @property
    def ports(self) -> list[int]:
        return [relay.port for relay in self.relays]

    def cpu_seconds(self) -> CpuTimes:
        total = self.redis.cpu_seconds()
        for relay in self.relays:
            total += relay.cpu_seconds()
        return total

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()
        self.redis.stop()


# one measured run


@dataclass
class Result:
    relay: str
    scenario: str
    offered_per_s: float
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lost: int
    cpu_us_per_delivery: float
    kernel_us_per_delivery: float  # the part of cpu_us_per_delivery spent in the kernel
    relay_cpu_share: float


async def connect_members(
    dialect: Dialect, ports: list[int], rooms: int, members: int, tally: Tally
) -> list[list[Link]]:
    """Members of each room are spread round-robin over the relays at ``ports``."""
    loop = asyncio.get_running_loop()
    handler = instantroom_handler(dialect, tally)
    keys = [RoomKeys.from_minikey(make_minikey(secrets.randbelow)) for _ in range(rooms)]
    groups: list[list[Link]] = []
    batch = 200
    for number in range(rooms):
        group: list[Link] = []
        for index in range(members):
            port = ports[(number * members + index) % len(ports)]
            uri = dialect.uri(port, number)
            _, link = await loop.create_connection(
                functools.partial(Link, uri, dialect.subprotocol, handler), "127.0.0.1", port
            )
            group.append(link)
        groups.append(group)
        pending = [link for g in groups[-max(1, batch // members) :] for link in g]
        if len(groups) % max(1, batch // members) == 0 or number == rooms - 1:
            await asyncio.gather(*(link.opened for link in pending))
    for number, group in enumerate(groups):
        await asyncio.gather(*(link.opened for link in group))
        await asyncio.gather(*(dialect.join(link, keys[number]) for link in group))
    return groups


async def run_load(
    relay: RelayProcess | Fleet,
    dialect: Dialect,
    scenario: str,
    rooms: int,
    members: int,
    senders: int,
    deliveries_per_s: float,
    seconds: float,
    warmup: float = 1.0,
) -> Result:
    tally = Tally(wire_size=dialect.delivery_size())
    groups = await connect_members(dialect, relay.ports, rooms, members, tally)
    for group in groups:
        # Senders and every tenth member (at least one per room) are parsed and timed.
        for index, link in enumerate(group):
            if index >= senders and (index - senders) % 10 != 0:
                link.count_into = tally
    per_sender = deliveries_per_s / (rooms * senders * (members - 1))
    sending = [(link, group) for group in groups for link in group[:senders]]
    filler = secrets.token_bytes(ENVELOPE_SIZE - 13 - _STAMP.size)
    number = 0
    start = time.monotonic()
    cpu_start = CpuTimes(0.0, 0.0)
    sent_in_window = 0
    measure_start = start + warmup
    measure_end = measure_start + seconds
    done = [0] * len(sending)
    while True:
        now = time.monotonic()
        if now >= measure_end:
            break
        if not tally.measuring and now >= measure_start:
            tally.measuring = True
            cpu_start = relay.cpu_seconds()
        for index, (link, _group) in enumerate(sending):
            # Each sender has its own phase, so that sends spread over the second.
            due = int((now - start) * per_sender + index / len(sending))
            while done[index] < due:
                done[index] += 1
                number += 1
                payload = b"\x01" + bytes(12) + _STAMP.pack(time.monotonic_ns(), number) + filler
                link.send(dialect.message(link, number & 0xFFFFFFFF, payload))
                if tally.measuring:
                    sent_in_window += 1
        await asyncio.sleep(0.001)
    cpu = relay.cpu_seconds() - cpu_start
    expected = sent_in_window * (members - 1)
    # Let what is in flight land, counted as late deliveries of the window.
    deadline = time.monotonic() + 2.0
    # Polling: the count is bumped by protocol callbacks, not by anything awaitable.
    while tally.total_delivered < expected and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    tally.measuring = False
    for group in groups:
        for link in group:
            link.close()
    await asyncio.sleep(0.2)
    latencies = sorted(tally.latencies_ns) or [0]
    delivered = min(tally.total_delivered, expected)
    return Result(
        relay=relay.kind,
        scenario=scenario,
        offered_per_s=deliveries_per_s,
        delivered_per_s=delivered / seconds,
        p50_ms=statistics.median(latencies) / 1e6,
        p99_ms=latencies[int(len(latencies) * 0.99) - 1 if len(latencies) > 1 else 0] / 1e6,
        max_ms=latencies[-1] / 1e6,
        lost=max(0, expected - tally.total_delivered),
        cpu_us_per_delivery=cpu.total / max(1, delivered) * 1e6,
        kernel_us_per_delivery=cpu.kernel / max(1, delivered) * 1e6,
        relay_cpu_share=cpu.total / seconds,
    )


async def idle_memory(
    relay: RelayProcess, dialect: Dialect, connections: int, room_size: int
) -> float:
    tally = Tally()
    await asyncio.sleep(0.5)
    before = relay.rss_bytes()
    groups = await connect_members(
        dialect, [relay.port], connections // room_size, room_size, tally
    )
    await asyncio.sleep(1.0)
    after = relay.rss_bytes()
    for group in groups:
        for link in group:
            link.close()
    await asyncio.sleep(0.5)
    return (after - before) / connections


def table(results: list[Result]) -> str:
    lines = [
        "| scenario | relay | offered/s | delivered/s | p50 ms | p99 ms | max ms | lost "
        "| relay CPU us/delivery | of which kernel | relay CPU |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.relay} | {r.offered_per_s:,.0f} | {r.delivered_per_s:,.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.max_ms:.2f} | {r.lost} | "
            f"{r.cpu_us_per_delivery:.2f} | {r.kernel_us_per_delivery:.2f} | "
            f"{r.relay_cpu_share:.0%} |"
        )
    return "\n".join(lines)


SCENARIOS = {
    # name: (rooms, members, senders)
    "1 room x 100": (1, 100, 1),
    "100 rooms x 10": (100, 10, 1),
}


PROFILE_DIR: Path | None = None
RELAYS: list[tuple[str, Dialect]] = [
    ("baseline", BaselineDialect()),
    ("instantroom", InstantRoomDialect()),
]


def start_profiler(
    relay: RelayProcess, name: str, seconds: float
) -> subprocess.Popen[bytes] | None:
    """With --profile DIR: sample the relay with py-spy (installed separately) for a run."""
    if PROFILE_DIR is None or relay.proc is None:
        return None
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    out = PROFILE_DIR / (re.sub(r"[^a-z0-9]+", "-", name.lower()) + ".txt")
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(relay.proc.pid), "--duration", str(int(seconds + 2)),
         "--rate", "400", "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def compare(loads: list[float], seconds: float, memory_connections: int) -> str:
    results: list[Result] = []
    memory: dict[str, float] = {}
    for scenario, (rooms, members, senders) in SCENARIOS.items():
        for load in loads:
            for kind, dialect in RELAYS:
                relay = RelayProcess(kind)
                relay.start()
                profiler = start_profiler(relay, f"{kind} {scenario} {load:.0f}", seconds)
                try:
                    result = await run_load(
                        relay, dialect, scenario, rooms, members, senders, load, seconds
                    )
                finally:
                    if profiler is not None:
                        profiler.wait()
                    relay.stop()
                results.append(result)
                print(table([result]).splitlines()[-1], flush=True)
    if memory_connections:
        for kind, dialect in RELAYS:
            relay = RelayProcess(kind)
            relay.start()
            try:
                memory[kind] = await idle_memory(relay, dialect, memory_connections, 10)
            finally:
                relay.stop()
            print(f"{kind}: {memory[kind] / 1024:.1f} KiB per idle joined connection", flush=True)
    report = [table(results), ""]
    by_key = {(r.scenario, r.offered_per_s, r.relay): r for r in results}
    if len(RELAYS) < 2:
        return "\n".join(report)
    report.append(
        "| scenario | offered/s | CPU per delivery, instantroom / baseline "
        "| of which instantroom's kernel time | p99, instantroom / baseline |"
    )
    report.append("|---|---:|---:|---:|---:|")
    for scenario in SCENARIOS:
        for load in loads:
            ours = by_key[(scenario, load, "instantroom")]
            base = by_key[(scenario, load, "baseline")]
            cpu_ratio = ours.cpu_us_per_delivery / base.cpu_us_per_delivery
            # The kernel's part alone, against the baseline's whole: a floor no user-space
            # change reaches under while each delivery still costs a write of its own.
            kernel_ratio = ours.kernel_us_per_delivery / base.cpu_us_per_delivery
            p99_ratio = ours.p99_ms / base.p99_ms
            report.append(
                f"| {scenario} | {load:,.0f} | {cpu_ratio:.2f}x | {kernel_ratio:.2f}x "
                f"| {p99_ratio:.2f}x |"
            )
    if memory:
        report.append("")
        report.append(
            f"Idle joined connections ({memory_connections:,}): instantroom "
            f"{memory['instantroom'] / 1024:.1f} KiB each, baseline "
            f"{memory['baseline'] / 1024:.1f} KiB each "
            f"({memory['instantroom'] / memory['baseline']:.2f}x)."
        )
    return "\n".join(report)


async def compare_backplane(load: float, seconds: float) -> str:
    """The same total load on one relay alone, and on 1, 2 and 3 relays sharing Redis."""
    results: list[Result] = []
    for scenario, (rooms, members, senders) in SCENARIOS.items():
        fleets: list[RelayProcess | Fleet] = [RelayProcess("instantroom")]
        fleets += [Fleet(size) for size in (1, 2, 3)]
        for fleet in fleets:
            fleet.start()
            try:
                result = await run_load(
                    fleet, InstantRoomDialect(), scenario, rooms, members, senders, load, seconds
                )
            finally:
                fleet.stop()
            result.relay = "1 relay, in memory" if isinstance(fleet, RelayProcess) else fleet.kind
            results.append(result)
            print(table([result]).splitlines()[-1], flush=True)
    lines = [table(results), ""]
    lines.append(
        "| scenario | relays | CPU per delivery vs one relay in memory | p99 vs one relay |"
    )
    lines.append("|---|---|---:|---:|")
    for scenario in SCENARIOS:
        runs = [r for r in results if r.scenario == scenario]
        alone = runs[0]
        for r in runs[1:]:
            cpu = r.cpu_us_per_delivery / alone.cpu_us_per_delivery
            lines.append(
                f"| {scenario} | {r.relay} | {cpu:.2f}x | {r.p99_ms / alone.p99_ms:.2f}x |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--loads", default="45000,99000,200000", help="offered deliveries/s, comma-separated"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--memory-connections", type=int, default=10_000)
    parser.add_argument("--profile", type=Path, help="write py-spy samples of each run here")
    parser.add_argument("--scenario", choices=list(SCENARIOS), help="run only this scenario")
    parser.add_argument("--only", choices=["instantroom", "baseline"], help="run one relay only")
    parser.add_argument(
        "--backplane",
        action="store_true",
        help="instead: one relay alone against 1, 2 and 3 relays on Redis, at the first load",
    )
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = args.profile
    if args.scenario:
        for name in list(SCENARIOS):
            if name != args.scenario:
                del SCENARIOS[name]
    if args.only:
        RELAYS[:] = [(k, d) for k, d in RELAYS if k == args.only]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.backplane:
        load = 5000.0 if args.quick else float(args.loads.split(",")[0])
        print(asyncio.run(compare_backplane(load, 1.0 if args.quick else args.seconds)))
        return
    if args.quick:
        loads, seconds, memory_connections = [5000.0], 1.0, 500
    else:
        loads = [float(x) for x in args.loads.split(",")]
        seconds, memory_connections = args.seconds, args.memory_connections
    print(asyncio.run(compare(loads, seconds, memory_connections)))


if __name__ == "__main__":
    main()
