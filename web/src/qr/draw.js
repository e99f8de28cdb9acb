// QR codes drawn with lean-qr, as a PNG data: URL for an <img> (which a phone can also
// long-press to save or share).

import { correction, generate } from "lean-qr";

// lean-qr leaves the light modules transparent by default: the page's white behind the
// <img> hides that, but a saved or shared image shown on a dark background (a gallery or
// a chat in dark mode) is then dark on dark, and no scanner reads it. Opaque white, always.
const LIGHT = [255, 255, 255];
const DARK = [0, 0, 0];

/** A PNG data: URL of `text`'s QR code, black on opaque white, with a quiet zone of 4 modules. */
export function qrDataUrl(text, { scale = 8 } = {}) {
  const code = generate(text, { minCorrectionLevel: correction.M });
  return code.toDataURL({ type: "image/png", scale, on: DARK, off: LIGHT, pad: 4 });
}
