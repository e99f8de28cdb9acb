// Entry point. capture.js comes first: it takes an invite key out of the address bar
// before anything else runs.
import "./app/capture.js";
import { render } from "preact";
import { App } from "./app/App.jsx";
import { App as AppState } from "./app/controller.js";
import "./app/app.css";

const app = new AppState();
render(<App app={app} />, document.getElementById("app"));
app.start();

if ("serviceWorker" in navigator) {
  window.addEventListener("load", () => {
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {
      // The app works without it; only offline starts need it.
    });
  });
}
