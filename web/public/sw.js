// The service worker keeps the app shell (HTML, scripts, styles, icons) for offline starts.
// It never touches messages: they travel over the WebSocket, which service workers do not
// see, and nothing under /ws, /healthz or /metrics is cached.
const CACHE = "instantroom-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icon.svg", "/icon-192.png"];
const NEVER = ["/ws", "/healthz", "/metrics"];

self.addEventListener("install", (event) => {
  // The page's own script and stylesheet too: the first visit fetched them before this
  // worker was there to keep them, and an app installed then must still start offline.
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(SHELL.filter((path) => path !== "/"));
      const page = await fetch("/", { cache: "no-cache" });
      if (!page.ok) throw new Error(`the page: HTTP ${page.status}`);
      await cache.addAll([...assetsNamed(await page.clone().text())]);
      await keep(new Request("/"), page, true);
    })(),
  );
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys().then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n)))),
  );
  self.clients.claim();
});

// Network first, so that a relay upgrade reaches people at once; the cache when offline.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  if (NEVER.some((path) => url.pathname === path || url.pathname.startsWith(path + "/"))) return;
  const navigation = event.request.mode === "navigate";
  const shellRequest = navigation ? new Request("/") : event.request;
  // Only the app itself is kept as the page to start offline: a navigation to any other
  // file (an icon, say) must not take its place.
  const isShell = (response) =>
    !navigation ||
    (["/", "/index.html"].includes(url.pathname) &&
      (response.headers.get("Content-Type") || "").startsWith("text/html"));
  // The kept copy also stands in for a server error (a proxy's 502 while the relay
  // restarts or is down) and for a hashed file of an older build that an open page of
  // that build still asks for (its bytes cannot have changed under the same name).
  const stale = (response) =>
    response.status >= 500 || (response.status === 404 && url.pathname.startsWith("/assets/"));
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok && isShell(response)) {
          // Kept before the worker may stop: waitUntil while the response is pending.
          event.waitUntil(keep(shellRequest, response.clone(), navigation));
        }
        if (!stale(response)) return response;
        return caches.match(shellRequest).then((hit) => hit || response);
      })
      .catch(() => caches.match(shellRequest).then((hit) => hit || Response.error())),
  );
});

/**
 * Keep `response` for `request`. A page unlike the one kept is a new build: its assets
 * have new names, and the old build's (the scanner's WebAssembly is a megabyte) would
 * otherwise stay for good. Those the new page does not name go; the ones it loads later
 * (the scanner) are kept again when they are next fetched.
 */
async function keep(request, response, page) {
  const cache = await caches.open(CACHE);
  if (!page) return cache.put(request, response);
  const text = await response.clone().text();
  const before = await cache.match(request);
  await cache.put(request, response);
  if (!before || (await before.text()) === text) return;
  const named = assetsNamed(text);
  for (const kept of await cache.keys()) {
    const path = new URL(kept.url).pathname;
    if (path.startsWith("/assets/") && !named.has(path)) await cache.delete(kept);
  }
}

/** The paths of the hashed files (/assets/...) that a page names. */
function assetsNamed(text) {
  return new Set([...text.matchAll(/\/assets\/[^"'\s)>]+/g)].map((found) => found[0]));
}
