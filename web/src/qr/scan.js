// QR scanning from the camera: the browser's BarcodeDetector where it exists (Android,
// macOS, ChromeOS), else the same API from the barcode-detector ponyfill, which runs
// ZXing-C++ compiled to WebAssembly. The .wasm file is served by the relay itself (never
// fetched from anywhere else); the CSP's connect-src would refuse other origins anyway.

import { BarcodeDetector as PonyfillDetector, prepareZXingModule } from "barcode-detector/ponyfill";
import wasmUrl from "zxing-wasm/reader/zxing_reader.wasm?url";

prepareZXingModule({
  overrides: {
    locateFile: (path, prefix) => (path.endsWith(".wasm") ? new URL(wasmUrl, window.location.href).href : prefix + path),
  },
});

async function makeDetector() {
  const Native = globalThis.BarcodeDetector;
  if (Native) {
    try {
      const formats = await Native.getSupportedFormats();
      if (formats.includes("qr_code")) return new Native({ formats: ["qr_code"] });
    } catch {
      // Fall through to the ponyfill.
    }
  }
  return new PonyfillDetector({ formats: ["qr_code"] });
}

/**
 * Scan QR codes from the camera into `video` until `onText` returns true or `signal` aborts.
 * Resolves when scanning stops; the camera is always released.
 */
export async function scanFromCamera(video, onText, signal) {
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: { ideal: "environment" } },
    audio: false,
  });
  try {
    video.srcObject = stream;
    video.muted = true;
    video.setAttribute("playsinline", "");
    await video.play();
    const detector = await makeDetector();
    while (!signal.aborted) {
      if (video.readyState >= 2) {
        let codes = [];
        try {
          codes = await detector.detect(video);
        } catch {
          codes = [];
        }
        for (const code of codes) {
          if (onText(code.rawValue)) return;
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
  } finally {
    for (const track of stream.getTracks()) track.stop();
    video.srcObject = null;
  }
}
