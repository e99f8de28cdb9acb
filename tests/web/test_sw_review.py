"""The service worker across a relay's life: an app installed on a first visit starts
offline, a relay behind a proxy that answers with an error page (the relay restarting or
down) still lets the installed app start, and an open page of an older build still gets the
files of its own build that the worker kept."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from instantroom.testing import fixed_answer, running_relay
from tests.web.conftest import Phone, offline

CACHE = "instantroom-shell-v1"

# The paths in the worker's cache, once it holds what `wanted` says (at most 10 s).
KEPT_WHEN = """async ([cacheName, wanted]) => {
    const deadline = Date.now() + 10000;
    for (;;) {
        const cache = await caches.open(cacheName);
        const paths = (await cache.keys()).map((request) => new URL(request.url).pathname);
        if (wanted.every((p) => paths.includes(p)) || Date.now() > deadline) return paths;
        await new Promise((resolve) => setTimeout(resolve, 50));
    }
}"""

PAGE_FILES = """() => [
    new URL(document.querySelector("script[type=module]").src).pathname,
    new URL(document.querySelector("link[rel=stylesheet]").href).pathname,
]"""


def evict_http_cache(phone: Phone) -> None:
    """What a phone short of space does: the browser's HTTP cache goes, the worker's stays."""
    session = phone.context.new_cdp_session(phone.page)
    try:
        session.send("Network.clearBrowserCache")
    finally:
        session.detach()


def test_an_app_installed_on_a_first_visit_starts_offline(
    phones: Callable[..., Phone],
) -> None:
    """The page's own script and stylesheet were fetched before the worker was there to
    keep them: the worker fetches them itself as it installs."""
    with running_relay() as relay:
        phone = phones()
        phone.open(relay.url)
        expect(phone.by("password-confirm")).to_be_visible()
        phone.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        files = phone.page.evaluate(PAGE_FILES)
        paths = phone.page.evaluate(KEPT_WHEN, [CACHE, files])
        assert set(files) <= set(paths)
    # The relay is gone and the browser's HTTP cache with it: only the worker's cache.
    evict_http_cache(phone)
    with offline(phone):
        phone.page.reload()
        expect(phone.by("password-confirm")).to_be_visible()


def test_an_error_page_from_a_proxy_does_not_take_the_apps_place(
    phones: Callable[..., Phone],
) -> None:
    """Behind nginx, a relay restarting (an upgrade) or down is a 502 page, not a network
    error: the installed app must still start, with the history kept on the device."""
    with running_relay() as relay:
        phone = phones()
        phone.open(relay.url)
        expect(phone.by("password-confirm")).to_be_visible()
        phone.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        phone.page.reload()  # under the worker: what the page loads is kept
        expect(phone.by("password-confirm")).to_be_visible()
        files = phone.page.evaluate(PAGE_FILES)
        assert set(files) <= set(phone.page.evaluate(KEPT_WHEN, [CACHE, ["/", *files]]))
        port = relay.port
    evict_http_cache(phone)
    bad_gateway = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with fixed_answer(502, bad_gateway, "text/html", port):
        phone.page.reload()
        expect(phone.by("password-confirm")).to_be_visible()
        # The error page was not kept in the app's place.
        kept = phone.page.evaluate(
            """async (name) => {
                const page = await (await caches.open(name)).match("/");
                return page ? await page.text() : "";
            }""",
            CACHE,
        )
        assert "Bad Gateway" not in kept
        assert files[0] in kept


def test_an_open_page_of_an_older_build_still_gets_its_kept_files(
    phones: Callable[..., Phone],
) -> None:
    """After a relay upgrade, a page still open from the build before loads the QR
    scanner's chunk by its old name: the relay has it no more, the worker may still."""
    with running_relay() as relay:
        phone = phones()
        phone.open(relay.url)
        expect(phone.by("password-confirm")).to_be_visible()
        phone.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        phone.page.reload()
        expect(phone.by("password-confirm")).to_be_visible()
        answers = phone.page.evaluate(
            """async (name) => {
                const cache = await caches.open(name);
                await cache.put("/assets/scan-olderbuild.js", new Response("export const old = 1;",
                    { headers: { "Content-Type": "text/javascript" } }));
                const old = await fetch("/assets/scan-olderbuild.js");
                const never = await fetch("/assets/scan-neverbuilt.js");
                return [old.status, await old.text(), never.status];
            }""",
            CACHE,
        )
        assert answers == [200, "export const old = 1;", 404]
