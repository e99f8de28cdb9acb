// Small byte helpers: concatenation, big-endian integers, constant-time equality.

import { UsageError } from "./errors.js";

/** Refuse what does not fit, as the Python core does: a DataView would wrap it. */
function fits(value, bits) {
  const whole = typeof value === "bigint" || Number.isInteger(value);
  if (!whole || BigInt(value) < 0n || BigInt(value) >= 1n << BigInt(bits)) {
    throw new UsageError(`Expected a whole number from 0 to 2^${bits} - 1.`);
  }
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function u16(value) {
  fits(value, 16);
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, Number(value));
  return out;
}

export function u32(value) {
  fits(value, 32);
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, Number(value));
  return out;
}

export function u64(value) {
  fits(value, 64);
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value));
  return out;
}

export function view(bytes) {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export const utf8 = new TextEncoder();
// ignoreBOM: a leading U+FEFF is kept, as Python keeps it (PROTOCOL.md 10.3: a decoded
// frame re-encodes to the same bytes).
export const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function hex(bytes) {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}
