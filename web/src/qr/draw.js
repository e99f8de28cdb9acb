// QR codes drawn with lean-qr, as a PNG data: URL for an <img> (which a phone can also
// long-press to save or share).

import { correction, generate } from "lean-qr";

/** A PNG data: URL of `text`'s QR code, with a quiet zone of 4 modules. */
export function qrDataUrl(text, { scale = 8 } = {}) {
  const code = generate(text, { minCorrectionLevel: correction.M });
  return code.toDataURL({ type: "image/png", scale, padX: 4, padY: 4 });
}
