// Builds the web client into the Python package's static files, which the relay serves
// and the wheel carries. scripts/setup runs `npm run build`.
import { defineConfig } from "vite";

export default defineConfig({
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "../src/instantroom/relay/static",
    emptyOutDir: true,
    target: "es2022",
    // No inline data: URLs for assets: the relay's Content-Security-Policy allows 'self'.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  server: { host: "127.0.0.1" },
});
