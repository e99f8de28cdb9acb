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

/** The browser's own reader, where it has one that reads QR codes; else null. */
async function nativeDetector() {
  const Native = globalThis.BarcodeDetector;
  if (!Native) return null;
  const formats = await Native.getSupportedFormats();
  return formats.includes("qr_code") ? new Native({ formats: ["qr_code"] }) : null;
}

// A browser that cannot run the reader (no WebAssembly, as in iOS's Lockdown Mode, or a
// .wasm that did not load) would otherwise show the camera's picture for ever and read
// nothing, with no word of why: it is said instead, and the camera is not turned on.
const CANNOT_SCAN = "this browser cannot read QR codes here (type the key, or open the invite link, instead).";
// Failures in a row, at one try every 150 ms, before giving up on a reader that worked at first.
const MAX_FAILURES = 20;

/**
 * A reader that has read a blank picture: the browser's own, else (it has none, or its
 * own fails even that) the ponyfill's. Throws when neither can work here at all.
 */
async function readyDetector() {
  let failure = null;
  for (const make of [nativeDetector, () => new PonyfillDetector({ formats: ["qr_code"] })]) {
    try {
      const detector = await make();
      if (detector === null) continue;
      await detector.detect(new ImageData(1, 1));
      return detector;
    } catch (error) {
      failure = error;
    }
  }
  throw new Error(CANNOT_SCAN, { cause: failure });
}

/**
 * Scan QR codes from the camera into `video` until `onText` returns true or `signal` aborts.
 * Resolves when scanning stops; the camera is always released.
 */
export async function scanFromCamera(video, onText, signal) {
  const detector = await readyDetector();
  if (signal.aborted) return;
  const stream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: { ideal: "environment" } },
    audio: false,
  });
  try {
    video.srcObject = stream;
    video.muted = true;
    video.setAttribute("playsinline", "");
    await video.play();
    let failures = 0;
    while (!signal.aborted) {
      if (video.readyState >= 2) {
        let codes = [];
        try {
          codes = await detector.detect(video);
          failures = 0;
        } catch (error) {
          // One frame may fail, whatever the error's name (the ponyfill calls any failure
          // of its reader NotSupportedError; readyDetector found it working); a reader
          // that fails on every frame has stopped working.
          if (++failures >= MAX_FAILURES) throw new Error(CANNOT_SCAN, { cause: error });
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
