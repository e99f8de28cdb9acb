"""packaging/nginx/instantroom.conf, run: Debian's nginx in front of two relays.

The template is filled with plain HTTP on 127.0.0.1 and two relays that share rooms
through a redis-server on a loopback port; nginx runs in the foreground as this user,
everything it writes under tmp_path. Through it: two members chat both ways (nginx puts
one on each relay), /healthz answers and the WebSocket upgrade passes, a browser's
same-origin one included. Filled in with TLS as its header says (the #TLS# lines taken in),
nginx accepts it and serves the upgrade over TLS, and a client's own X-Forwarded-For
does not get it past the per-address limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from instantroom.client.connection import RoomClient
from instantroom.protocol.codes import SUBPROTOCOL
from instantroom.protocol.kdf import DeviceKey
from instantroom.relay.tls import make_self_signed
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    read_response_head,
    run,
    running_relay,
    upgrade_request,
)
from tests.backplane.test_redis_backplane import RedisServer, free_port

TEMPLATE = Path(__file__).resolve().parents[2] / "packaging" / "nginx" / "instantroom.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def fill_template(relay_ports: tuple[int, int], listen_port: int, listen_tail: str = "") -> str:
    text = TEMPLATE.read_text()
    values = {
        "@RELAY_1@": f"{LOOPBACK}:{relay_ports[0]}",
        "@RELAY_2@": f"{LOOPBACK}:{relay_ports[1]}",
        "@LISTEN@": f"{LOOPBACK}:{listen_port}{listen_tail}",
    }
    for placeholder, value in values.items():
        # Each placeholder used exactly once outside comments: the test runs the real file.
        in_config = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        assert sum(line.count(placeholder) for line in in_config) == 1, placeholder
        text = text.replace(placeholder, value)
    assert not re.search(r"^[^#]*@[A-Z0-9_]+@", text, re.MULTILINE), "a placeholder left"
    return text


def nginx_conf(root: Path, site: Path) -> str:
    """A whole nginx.conf: foreground, this user, every path under ``root``."""
    user = ""
    if os.geteuid() == 0:  # as root, nginx would switch its workers to nobody
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp = "\n".join(
        f"    {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {root / "nginx.pid"};
error_log {root / "error.log"} notice;
events {{
    worker_connections 256;
}}
http {{
{temp}
    include {site};
}}
"""


@contextlib.contextmanager
def running_nginx(root: Path, site_text: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    site = root / "instantroom.conf"
    site.write_text(site_text)
    conf = root / "nginx.conf"
    conf.write_text(nginx_conf(root, site))
    assert os.access(NGINX, os.X_OK), "nginx is not installed: scripts/system-packages nginx"
    command = [NGINX, "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    checked = subprocess.run(
        [*command, "-t"], capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (root / "error.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
                break
            assert time.monotonic() < deadline, "nginx did not listen"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown: master and workers
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    assert process.returncode == 0, (root / "error.log").read_text()
    troubles = re.findall(
        r"^.* \[(?:emerg|alert|crit|error)\] .*$", (root / "error.log").read_text(), re.M
    )
    assert troubles == []


async def next_text(client: RoomClient) -> str:
    async with asyncio.timeout(5):
        async for received in client.messages():
            return received.message.text
    raise AssertionError("no message")


async def room_members(relay: RelayProcess) -> float:
    """The relay's own count of room members, from its /metrics (asked directly)."""
    response = await http_request(relay.port, "/metrics")
    assert response.status == 200
    match = re.search(rb"^instantroom_room_members (\S+)$", response.body, re.MULTILINE)
    assert match is not None, response.body
    return float(match.group(1))


def test_nginx_in_front_of_two_relays(tmp_path: Path) -> None:
    redis_server = RedisServer(free_port())
    redis_server.start()
    port = free_port()
    room = fresh_room()
    try:
        with contextlib.ExitStack() as stack:
            one, two = (
                stack.enter_context(running_relay("--backplane", redis_server.url, "--trust-proxy"))
                for _ in range(2)
            )
            for relay in (one, two):
                relay.wait_for_log("event=backplane.up")
            site = fill_template((one.port, two.port), port)
            stack.enter_context(running_nginx(tmp_path, site, port))
            url = f"http://{LOOPBACK}:{port}"

            async def scenario() -> None:
                # The upgrade passes through nginx: 101, with our subprotocol.
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.write(upgrade_request(port))
                status, headers = await read_response_head(reader)
                assert status == 101, (status, headers)
                assert headers["upgrade"].lower() == "websocket"
                assert headers["sec-websocket-protocol"] == SUBPROTOCOL
                writer.close()

                # A browser on the page nginx serves sends its Origin, port included; nginx
                # passes Host with the port, so the relay sees the same origin and lets it in.
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                writer.write(upgrade_request(port, origin=url))
                status, headers = await read_response_head(reader)
                assert status == 101, (status, headers)
                writer.close()

                health = await http_request(port, "/healthz")
                assert health.status == 200
                assert json.loads(health.body)["status"] == "ok"
                assert health.headers.get("server", "").startswith("nginx")

                alice_key = DeviceKey.from_private_bytes(secrets.token_bytes(32))
                bob_key = DeviceKey.from_private_bytes(secrets.token_bytes(32))
                async with (
                    RoomClient(url, alice_key, "alice") as alice,
                    RoomClient(url, bob_key, "bob") as bob,
                ):
                    await alice.join(room)
                    await bob.join(room)
                    # nginx took turns: one member on each relay, so what follows
                    # crosses relays through Redis.
                    assert [await room_members(r) for r in (one, two)] == [1.0, 1.0]
                    await alice.send_text(room.room_id, "hello bob")
                    assert await next_text(bob) == "hello bob"
                    await bob.send_text(room.room_id, "hello alice")
                    assert await next_text(alice) == "hello alice"

            run(scenario(), timeout=30)
        for relay in (one, two):
            assert_exited_cleanly(relay)
    finally:
        redis_server.stop()


def fill_template_with_tls(relay_port: int, listen_port: int, certificates: Path) -> str:
    """The template as its header says for TLS: ``listen ... ssl`` and the #TLS# lines in,
    the Let's Encrypt paths pointing at ``certificates`` instead."""
    text = fill_template((relay_port, relay_port), listen_port, " ssl")
    assert text.count("#TLS# ") >= 3, "the template has no #TLS# lines to take in"
    text = text.replace("#TLS# ", "")
    live = "/etc/letsencrypt/live/chat.example.org/"
    assert text.count(live) == 2, "ssl_certificate and ssl_certificate_key"
    return text.replace(live, f"{certificates}/")


def test_nginx_with_tls_as_the_template_says(tmp_path: Path) -> None:
    certificate, key = make_self_signed()
    (tmp_path / "fullchain.pem").write_bytes(certificate)
    (tmp_path / "privkey.pem").write_bytes(key)
    port = free_port()
    client_tls = ssl.create_default_context(cadata=certificate.decode())
    with contextlib.ExitStack() as stack:
        relay = stack.enter_context(
            running_relay("--trust-proxy", "--connections-per-address", "1")
        )
        site = fill_template_with_tls(relay.port, port, tmp_path)
        stack.enter_context(running_nginx(tmp_path, site, port))

        async def upgrade(forwarded_for: str) -> tuple[int, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(
                LOOPBACK, port, ssl=client_tls, server_hostname="localhost"
            )
            request = upgrade_request(port, origin=f"https://{LOOPBACK}:{port}")
            # A client that names an address of its own, hoping for a second allowance.
            request = request.replace(
                b"\r\n\r\n", f"\r\nX-Forwarded-For: {forwarded_for}\r\n\r\n".encode()
            )
            writer.write(request)
            status, headers = await read_response_head(reader)
            if status == 101:
                assert headers["sec-websocket-protocol"] == SUBPROTOCOL
            return status, writer

        async def scenario() -> None:
            # A browser on the https:// page nginx serves: let in, over TLS.
            first, held = await upgrade("192.0.2.1")
            assert first == 101
            # nginx replaces X-Forwarded-For with the peer's address: the same client
            # naming another address is still one address, over its limit of 1.
            second, turned_away = await upgrade("192.0.2.2")
            assert second == 429
            for writer in (turned_away, held):
                writer.close()
                # A TLS stream closes after its close_notify: wait for the socket to go.
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        run(scenario(), timeout=30)
    assert_exited_cleanly(relay)
