// The service worker keeps the app shell (HTML, scripts, styles, icons) for offline starts.
// It never touches messages: they travel over the WebSocket, which service workers do not
// see, and nothing under /ws, /healthz or /metrics is cached.
const CACHE = "instantroom-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icon.svg", "/icon-192.png"];
const NEVER = ["/ws", "/healthz", "/metrics"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)));
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
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok && isShell(response)) {
          // Kept before the worker may stop: waitUntil while the response is pending.
          event.waitUntil(keep(shellRequest, response.clone(), navigation));
        }
        return response;
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
  const named = new Set([...text.matchAll(/\/assets\/[^"'\s)>]+/g)].map((found) => found[0]));
  for (const kept of await cache.keys()) {
    const path = new URL(kept.url).pathname;
    if (path.startsWith("/assets/") && !named.has(path)) await cache.delete(kept);
  }
}
