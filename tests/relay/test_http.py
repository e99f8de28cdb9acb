"""The relay's HTTP side: /healthz, /metrics, the web page and its headers, and the
Origin policy of the WebSocket endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from instantroom.protocol import frames
from instantroom.protocol.codes import ErrorCode
from instantroom.protocol.join import sign_join_proof
from instantroom.relay.config import RelayConfig, add_relay_options, config_from_args
from instantroom.testing import (
    LOOPBACK,
    RelayProcess,
    assert_exited_cleanly,
    fresh_room,
    http_request,
    raw_client,
    read_response_head,
    response_status,
    run,
    running_relay,
    upgrade_request,
)


def samples(exposition: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample of a Prometheus text exposition."""
    found: dict[str, float] = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


async def answer_head(port: int, request: bytes) -> tuple[int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(LOOPBACK, port)
    try:
        writer.write(request)
        return await read_response_head(reader)
    finally:
        writer.close()


def test_every_refusal_carries_the_security_headers_and_those_of_the_library_are_counted(
    relay: RelayProcess,
) -> None:
    """websockets' own answers (a request line or a header line over 8 KiB: 414, 431) and
    the relay's refusals made with it (a refused Origin, whose text quotes the header)
    had none of the headers of the relay's other answers, and the first were not counted."""
    host = f"Host: {LOOPBACK}:{relay.port}\r\n"
    requests = {
        403: upgrade_request(relay.port, origin="https://elsewhere.example"),
        400: upgrade_request(relay.port, subprotocol=None),
        414: f"GET /{'a' * 9000} HTTP/1.1\r\n{host}\r\n".encode(),
        431: f"GET /ws HTTP/1.1\r\n{host}X-Big: {'b' * 9000}\r\n\r\n".encode(),
    }

    async def scenario() -> None:
        for status, request in requests.items():
            answered, headers = await answer_head(relay.port, request)
            assert answered == status
            assert headers["x-content-type-options"] == "nosniff", status
            assert "frame-ancestors 'none'" in headers["content-security-policy"], status
            assert headers["cache-control"] == "no-store", status
        exposition = samples((await http_request(relay.port, "/metrics")).body.decode())
        assert exposition['instantroom_rejections_total{reason="request_too_large"}'] == 2
        assert exposition['instantroom_rejections_total{reason="origin"}'] == 1

    run(scenario())


def test_healthz_the_page_and_not_found(relay: RelayProcess) -> None:
    async def scenario() -> None:
        health = await http_request(relay.port, "/healthz")
        assert health.status == 200
        assert health.headers["content-type"] == "application/json"
        assert json.loads(health.body)["status"] == "ok"
        # The relay's clock, which clients compare theirs with (RFC 9110 6.6.1).
        stated = email.utils.parsedate_to_datetime(health.headers["date"]).timestamp()
        assert abs(stated - time.time()) < 5

        page = await http_request(relay.port, "/")
        assert page.status == 200
        assert page.headers["content-type"].startswith("text/html")
        assert b"InstantRoom" in page.body
        policy = page.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
        assert directives["default-src"] == "'self'"
        # No inline or third-party script; WebAssembly (the QR scanner) only from 'self'.
        assert directives["script-src"] == "'self' 'wasm-unsafe-eval'"
        assert directives["connect-src"] == "'self' ws: wss:"
        assert directives["object-src"] == "'none'"
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert (await http_request(relay.port, "/index.html")).body == page.body

        assert (await http_request(relay.port, "/no/such/file")).status == 404
        # The WebSocket path without an upgrade is not a page.
        assert (await http_request(relay.port, "/ws")).status == 404

    run(scenario())


def test_metrics_count_connections_frames_bytes_and_rejections(relay: RelayProcess) -> None:
    room = fresh_room()
    rid = room.room_id

    async def scenario() -> None:
        before = samples((await http_request(relay.port, "/metrics")).body.decode())
        async with raw_client(relay.ws_url) as alice, raw_client(relay.ws_url) as bob:
            await alice.join(room)
            await bob.join(room)
            await alice.send(frames.Publish(1, rid, b"x" * 300))
            await alice.barrier()
            await bob.barrier()
            challenge = await bob.challenge(fresh_room())
            await bob.send(frames.Proof(rid, sign_join_proof(room.signing_key, rid, challenge)))
            await bob.expect_error(ErrorCode.NO_CHALLENGE)
            await bob.send(b"\xee")
            await bob.expect_error(ErrorCode.UNKNOWN_FRAME_TYPE)
            response = await http_request(relay.port, "/metrics")
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain")
        after = samples(response.body.decode())

        def grew(name: str) -> float:
            return after[name] - before.get(name, 0.0)

        # The /metrics request itself counts as a connection.
        assert grew("instantroom_connections_total") == 3
        # alice: JOIN, PROOF, PUBLISH, PING; bob: JOIN, PROOF, PING, JOIN, PROOF, 0xee.
        assert grew("instantroom_frames_received_total") == 10
        # CHALLENGE x3, JOINED x2, PRESENCE, ACK, DELIVER, PONG x2, ERROR x2; and the relay
        # counts its HTTP responses as sent frames too: two 101s and the first /metrics.
        assert grew("instantroom_frames_sent_total") == 12 + 3
        assert grew("instantroom_bytes_received_total") > 300
        assert grew("instantroom_bytes_sent_total") > 300
        assert grew("instantroom_messages_delivered_total") == 1
        assert after['instantroom_rejections_total{reason="no_challenge"}'] == 1
        assert after['instantroom_rejections_total{reason="unknown_frame_type"}'] == 1
        assert after["instantroom_connections_open"] == 3
        assert after["instantroom_rooms_open"] == 1
        assert after["instantroom_room_members"] == 2
        # Counts only: no room id in any form.
        assert rid.hex()[:8] not in response.body.decode()

    run(scenario())


def test_metrics_behind_a_token_answer_only_its_bearer(tmp_path: Path) -> None:
    """/metrics was public on the relay's port, and a relay with one room told its member
    count to anyone. With --metrics-token-file only the token's bearer reads it."""
    token = "a2b4c6d8e0f1a3b5c7d9e1f3"
    token_file = tmp_path / "metrics-token"
    token_file.write_text(token + "\n")

    async def scenario(port: int) -> None:
        refused = await http_request(port, "/metrics")
        assert refused.status == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert b"instantroom_" not in refused.body
        wrongs = (f"Bearer {token[:-1]}", f"Bearer {token}0", f"Basic {token}", token,
                  "Bearer " + "\xff" * len(token))  # fmt: skip
        for wrong in wrongs:
            answer = await http_request(port, "/metrics", headers={"Authorization": wrong})
            assert answer.status == 401, wrong
        right = await http_request(port, "/metrics", headers={"Authorization": f"Bearer {token}"})
        assert right.status == 200
        assert "instantroom_connections_total" in right.body.decode()
        counted = samples(right.body.decode())
        assert counted['instantroom_rejections_total{reason="metrics_unauthorized"}'] == 6
        assert (await http_request(port, "/healthz")).status == 200  # health stays public

    with running_relay("--metrics-token-file", str(token_file)) as relay:
        run(scenario(relay.port))
        assert token not in relay.log_text()
    assert_exited_cleanly(relay)


@pytest.mark.parametrize(
    "content", [None, "", "short", "with a space in it, long enough", "x" * 257, "\x00" * 20]
)
def test_a_metrics_token_file_that_cannot_serve_stops_serve_naming_the_file(
    tmp_path: Path, content: str | None
) -> None:
    token_file = tmp_path / "metrics-token"
    if content is not None:
        token_file.write_text(content)
    serve = [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, "--port", "0"]
    done = subprocess.run(
        [*serve, "--metrics-token-file", str(token_file)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert str(token_file) in done.stderr
    assert "Traceback" not in done.stderr
    if content:
        assert content not in done.stderr


def test_origins_same_site_by_default_and_a_list_by_option() -> None:
    evil = "https://evil.example"
    friend = "https://chat.example"
    with running_relay() as relay:
        port = relay.port

        async def by_default() -> None:
            # No Origin: no browser.
            assert await response_status(port, upgrade_request(port)) == 101
            same = f"http://{LOOPBACK}:{port}"
            assert await response_status(port, upgrade_request(port, origin=same)) == 101
            assert await response_status(port, upgrade_request(port, origin=evil)) == 403
            assert await response_status(port, upgrade_request(port, origin=friend)) == 403
            # Same host, other port: another origin.
            other_port = f"http://{LOOPBACK}:{port + 1}"
            assert await response_status(port, upgrade_request(port, origin=other_port)) == 403
            # Without our subprotocol, no WebSocket either.
            assert await response_status(port, upgrade_request(port, subprotocol=None)) == 400
            exposition = (await http_request(port, "/metrics")).body.decode()
            assert samples(exposition)['instantroom_rejections_total{reason="origin"}'] == 3

        run(by_default())
    assert_exited_cleanly(relay)

    with running_relay("--origins", f"{friend}, https://other.example") as relay:
        port = relay.port

        async def with_a_list() -> None:
            assert await response_status(port, upgrade_request(port, origin=friend)) == 101
            other = "https://other.example"
            assert await response_status(port, upgrade_request(port, origin=other)) == 101
            assert await response_status(port, upgrade_request(port, origin=evil)) == 403
            assert await response_status(port, upgrade_request(port)) == 101
            # The relay's own pages stay allowed: the list adds origins, it removes none.
            same = f"http://{LOOPBACK}:{port}"
            assert await response_status(port, upgrade_request(port, origin=same)) == 101

        run(with_a_list())
    assert_exited_cleanly(relay)

    with running_relay(env={"INSTANTROOM_ORIGINS": evil}) as relay:
        port = relay.port
        assert run(response_status(port, upgrade_request(port, origin=evil))) == 101
    assert_exited_cleanly(relay)


def test_every_option_is_also_an_environment_variable() -> None:
    """Spot checks, through behaviour: limits set by INSTANTROOM_* only."""
    env = {"INSTANTROOM_MAX_FRAME_SIZE": "1000", "INSTANTROOM_ROOMS_PER_CONNECTION": "1"}
    with running_relay(env=env) as relay:

        async def scenario() -> None:
            room = fresh_room()
            async with raw_client(relay.ws_url) as client:
                await client.join(room)
                await client.send(frames.Join(fresh_room().room_id, room.public_key, 0))
                await client.expect_error(ErrorCode.TOO_MANY_ROOMS)
                await client.send(frames.Publish(1, room.room_id, bytes(1000)))
                assert (await client.closed()).code == 1009

        run(scenario())
    assert_exited_cleanly(relay)
    assert re.search(r"event=relay\.started .*port=\d+", relay.log_text())


def test_a_bad_environment_variable_stops_serve_alone_and_names_itself() -> None:
    """A value that does not parse is a usage error of ``serve`` (exit 2, no traceback),
    and other commands never trip on it; an empty number counts as unset."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INSTANTROOM_")}
    bad = {
        "INSTANTROOM_PORT": "eighty",
        "INSTANTROOM_LOG_IDS": "maybe",
        "INSTANTROOM_LOG_LEVEL": "verbose",
    }
    for name, value in bad.items():
        env = {**environ, name: value}
        serve = [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK]
        done = subprocess.run(serve, env=env, capture_output=True, text=True, timeout=30)
        assert done.returncode == 2, done.stderr
        assert f"{name}={value!r}" in done.stderr
        assert "Traceback" not in done.stderr
        other = [sys.executable, "-m", "instantroom", "key", "new"]
        done = subprocess.run(other, env=env, capture_output=True, text=True, timeout=30)
        assert (done.returncode, done.stderr) == (0, "")
    with running_relay(env={"INSTANTROOM_MAX_FRAME_SIZE": "", "INSTANTROOM_LOG_IDS": ""}) as relay:
        assert "event=relay.started" in relay.log_text()
    assert_exited_cleanly(relay)


def test_an_empty_environment_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty INSTANTROOM_HOST had listened on every address, IPv6 ones too.
    monkeypatch.setenv("INSTANTROOM_HOST", "")
    monkeypatch.setenv("INSTANTROOM_LOG_LEVEL", " ")
    parser = argparse.ArgumentParser()
    add_relay_options(parser)
    config = config_from_args(parser.parse_args([]))
    assert (config.host, config.log_level) == (RelayConfig.host, RelayConfig.log_level)


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--port", "70000"], "--port is 70000: it must be at least 0 and at most 65,535."),
        (["--members-per-room", "0"], "--members-per-room is 0: it must be at least 1"),
        (["--idle-timeout", "-1"], "--idle-timeout is -1.0: it must be at least 0.01"),
        (["--handshake-timeout", "nan"], "--handshake-timeout is nan"),
        (["--max-frame-size", "2000000"], "at most 1,048,576"),
        (["--max-frame-size", "100"], "at least 322"),
        (["--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
        (["--tls-key", "key.pem", "--tls-self-signed"], "leave out --tls-cert and --tls-key"),
    ],
)
def test_a_setting_out_of_its_range_stops_serve_with_what_it_must_be(
    flags: list[str], said: str
) -> None:
    # A port of 70000 had wrapped round to 4464; a key without its certificate had been
    # served as plain HTTP; 0 members a room refused everyone.
    serve = [sys.executable, "-m", "instantroom", "serve", "--host", LOOPBACK, *flags]
    done = subprocess.run(serve, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr


def test_a_request_with_a_header_twice_is_refused_with_400(relay: RelayProcess) -> None:
    async def scenario() -> None:
        twice_upgrade = b"GET /healthz HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nUpgrade: y\r\n\r\n"
        assert await response_status(relay.port, twice_upgrade) == 400
        request = upgrade_request(relay.port)
        twice_host = request.replace(b"\r\n\r\n", b"\r\nHost: elsewhere\r\n\r\n")
        assert await response_status(relay.port, twice_host) == 400
        assert await response_status(relay.port, request) == 101  # and the relay is fine

    run(scenario())
    assert relay.problems() == []


def test_a_slow_reader_gets_the_whole_of_the_largest_file() -> None:
    """The QR scanner's wasm is bigger than a WebSocket reader may fall behind by: a phone
    fetching it over a slow link must still get all of it, however long it takes."""
    static = resources.files("instantroom.relay") / "static" / "assets"
    largest = max((f for f in static.iterdir() if f.is_file()), key=lambda f: len(f.read_bytes()))
    expected = largest.read_bytes()
    with running_relay("--send-buffer", "65536") as relay:  # a file is bigger than this
        # Blocking reads: asyncio's reader would buffer ahead and so be no slow reader.
        with socket.socket() as sock:
            # A small window and small segments, as over a phone link: loopback's 64 KiB
            # segments would let the relay's kernel take the whole file at once.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
            sock.settimeout(10)
            sock.connect((LOOPBACK, relay.port))
            sock.sendall(f"GET /assets/{largest.name} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            received = b""
            started = time.monotonic()
            while chunk := sock.recv(16_000):
                received += chunk
                time.sleep(0.1)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert len(body) == len(expected)
        assert body == expected
        assert time.monotonic() - started > 3  # slower than the relay waits for a close
    assert_exited_cleanly(relay)
