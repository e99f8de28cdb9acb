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
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(shellRequest, copy));
        }
        return response;
      })
      .catch(() => caches.match(shellRequest).then((hit) => hit || Response.error())),
  );
});
