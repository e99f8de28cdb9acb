"""How the relay serves the web client's files to browsers and the caches between: what may
be kept and for how long, revalidation, HEAD and other methods, content types, paths
that name no file, and nginx in front while relays of two builds serve side by side."""

from __future__ import annotations

import re
from pathlib import Path

from instantroom.testing import (
    RelayProcess,
    fixed_answer,
    http_request,
    run,
    running_relay,
    send_raw,
)
from tests.backplane.test_redis_backplane import free_port
from tests.deploy.test_nginx import fill_template, running_nginx


def page_assets(page: bytes) -> list[str]:
    """The hashed files the page names (its script and stylesheet)."""
    return sorted(set(re.findall(r"/assets/[^\"'\s>]+", page.decode())))


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def directives(cache_control: str) -> dict[str, str]:
    found = {}
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        found[name.lower()] = value
    return found


def test_hashed_assets_are_kept_for_good_and_everything_else_is_checked_first(
    relay: RelayProcess,
) -> None:
    """A relay upgrade changes the page and gives its files new names: the page, the
    service worker and the manifest must be checked with the relay before each use, while
    a hashed file (the scanner's megabyte of WebAssembly) need not be fetched again."""

    async def scenario() -> None:
        page = await http_request(relay.port, "/")
        assets = page_assets(page.body)
        if not assets:  # the placeholder page of a relay with no web client built
            return
        for path in assets:
            asset = await http_request(relay.port, path)
            assert asset.status == 200, path
            kept = directives(asset.headers["cache-control"])
            assert "immutable" in kept, path
            assert int(kept["max-age"]) >= 365 * 24 * 3600, path
        for path in ["/", "/index.html", "/sw.js", "/manifest.webmanifest", "/icon.svg"]:
            response = await http_request(relay.port, path)
            assert response.status == 200, path
            checked = directives(response.headers["cache-control"])
            assert "no-cache" in checked or "no-store" in checked, path
            assert "immutable" not in checked, path
        # A name no build has is not kept as missing for good.
        missing = await http_request(relay.port, "/assets/index-nosuchbuild.js")
        assert missing.status == 404
        assert "immutable" not in directives(missing.headers["cache-control"])
        for path in ["/healthz", "/metrics"]:
            answer = directives((await http_request(relay.port, path)).headers["cache-control"])
            assert "no-cache" in answer or "no-store" in answer, path

    run(scenario())


def test_a_copy_still_current_is_confirmed_without_its_body(relay: RelayProcess) -> None:
    """Checking the page with the relay costs a few hundred bytes, not the page again."""

    async def scenario() -> None:
        for path in ["/", "/sw.js", "/manifest.webmanifest"]:
            first = await http_request(relay.port, path)
            etag = first.headers["etag"]
            for given in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
                again = await http_request(relay.port, path, headers={"If-None-Match": given})
                assert again.status == 304, (path, given)
                assert again.body == b""
                assert again.headers["etag"] == etag
                # The headers that go with the page go with the confirmation too.
                assert again.headers["cache-control"] == first.headers["cache-control"]
                assert again.headers["content-security-policy"]
                assert "date" in again.headers
            changed = await http_request(relay.port, path, headers={"If-None-Match": '"old"'})
            assert changed.status == 200
            assert changed.body == first.body
        # Different files, different tags.
        tags = {(await http_request(relay.port, p)).headers["etag"] for p in ["/", "/sw.js"]}
        assert len(tags) == 2

    run(scenario())


def test_head_gets_the_headers_of_get_and_no_body(relay: RelayProcess) -> None:
    request = "HEAD {} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    async def scenario() -> None:
        for path in ["/", "/sw.js", "/healthz", "/no/such/file"]:
            got = await http_request(relay.port, path)
            status, headers, body = split_response(
                await send_raw(relay.port, request.format(path).encode())
            )
            assert status == got.status, path
            assert body == b"", path
            assert headers["content-length"] == str(len(got.body)), path
            assert headers["content-type"] == got.headers["content-type"], path

    run(scenario())


def test_other_methods_are_refused(relay: RelayProcess) -> None:
    async def scenario() -> None:
        for method in ["POST", "PUT", "DELETE", "OPTIONS"]:
            for path in ["/", "/index.html", "/healthz"]:
                response = await http_request(
                    relay.port, path, method=method, headers={"Content-Length": "0"}
                )
                assert response.status == 405, (method, path)
                assert {m.strip() for m in response.headers["allow"].split(",")} == {
                    "GET",
                    "HEAD",
                }
                assert b"InstantRoom" not in response.body

    run(scenario())


def test_content_types_and_paths_that_name_no_file(relay: RelayProcess) -> None:
    async def scenario() -> None:
        page = await http_request(relay.port, "/")
        expected = {
            ".js": "text/javascript",
            ".css": "text/css",
            ".wasm": "application/wasm",  # WebAssembly.instantiateStreaming needs it
            ".webmanifest": "application/manifest+json",
            ".svg": "image/svg+xml",
            ".png": "image/png",
        }
        paths = [*page_assets(page.body), "/sw.js", "/manifest.webmanifest", "/icon.svg"]
        paths.append("/icon-192.png")
        for path in paths:
            response = await http_request(relay.port, path)
            if response.status == 404 and path.startswith("/icon"):
                continue  # a relay with no web client built has no icons
            suffix = "." + path.rsplit(".", 1)[-1]
            assert response.headers["content-type"].split(";")[0] == expected[suffix], path
        # A query string does not change the file; nothing outside the files is reached.
        assert (await http_request(relay.port, "/?from=invite")).body == page.body
        for path in [
            "/assets/",
            "/assets",
            "//index.html",
            "/assets/../index.html",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/..%2fpyproject.toml",
            "/INDEX.HTML",
            "/index.html/",
            "/__init__.py",
            "/server.py",
        ]:
            response = await http_request(relay.port, path)
            assert response.status == 404, path
            assert response.headers["content-type"].startswith("text/plain"), path

    run(scenario())


def test_nginx_finds_a_builds_files_while_relays_are_upgraded_one_at_a_time(
    tmp_path: Path,
) -> None:
    """The template's nginx spreads requests over the relays by turn: during a rolling
    upgrade the page comes from one build and its script, by turn, from a relay of the
    other, which 404s it (a blank page). A hashed file one relay lacks is asked of the next."""
    other_build = fixed_answer(404, b"Not found.\n", "text/plain; charset=utf-8")
    with running_relay() as relay, other_build as other_port:
        page = run(http_request(relay.port, "/"))
        assets = page_assets(page.body)
        if not assets:
            return  # the placeholder page names no files
        listen = free_port()
        site = fill_template((relay.port, other_port), listen)
        with running_nginx(tmp_path, site, listen):

            async def scenario() -> None:
                for _ in range(3):  # each file reaches both relays first at least once
                    for path in assets:
                        direct = await http_request(relay.port, path)
                        proxied = await http_request(listen, path)
                        assert proxied.status == 200, path
                        assert proxied.body == direct.body, path
                        assert "immutable" in proxied.headers["cache-control"]
                # A file neither has is still a 404, from the last relay asked.
                missing = await http_request(listen, "/assets/index-nosuchbuild.js")
                assert missing.status == 404

            run(scenario())
