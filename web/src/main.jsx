// Entry point. capture.js comes first: it takes an invite key out of the address bar
// before anything else runs.
import "./app/capture.js";
import { render } from "preact";
import { App } from "./app/App.jsx";
import { App as AppState } from "./app/controller.js";
import "./app/app.css";

const root = document.getElementById("app");
const app = new AppState();
render(<App app={app} />, root);
app.start().catch((error) => {
  // start() fails only where the key store cannot be read at all: no IndexedDB (some
  // private windows), or one that refuses to open. Say so, rather than "Loading…" for ever;
  // nothing was read or written.
  render(
    <main class="screen unlock">
      <h1>InstantRoom cannot start here</h1>
      <p role="alert" class="alert">
        This browser window cannot keep its key store ({String(error?.message ?? error)}). A private
        window may not allow it: open this page in a normal window. Nothing was changed.
      </p>
    </main>,
    root,
  );
});

if ("serviceWorker" in navigator) {
  window.addEventListener("load", () => {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {
      // The app works without it; only offline starts need it.
    });
  });
}
