// G.711 mu-law, as Twilio Media Streams carry it (8 kHz, one byte per sample).
// Written out here (a page has no audioop); tests check it against Python's audioop.
const BIAS = 0x84;

const DECODE = new Int16Array(256);
for (let u = 0; u < 256; u++) {
  const v = ~u & 0xff;
  const exponent = (v >> 4) & 0x07;
  const magnitude = (((v & 0x0f) << 3) + BIAS) << exponent;
  DECODE[u] = v & 0x80 ? BIAS - magnitude : magnitude - BIAS;
}

export function decodeSample(byte) {
  return DECODE[byte];
}

// Segment ends of the 14-bit magnitude (G.711's eight chords).
const SEGMENT_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

// Encoded on the 14-bit scale G.711 defines, rounding exactly as the bridge's own codec
// (audioop) does, so audio encoded here and there is byte-identical.
export function encodeSample(pcm) {
  let value = Math.max(-32768, Math.min(32767, pcm | 0)) >> 2;
  let mask = 0xff;
  if (value < 0) { value = -value; mask = 0x7f; }
  value = Math.min(value, 8159) + (BIAS >> 2);
  let segment = 0;
  while (segment < 8 && value > SEGMENT_END[segment]) segment++;
  if (segment >= 8) return 0x7f ^ mask;
  return ((segment << 4) | ((value >> (segment + 1)) & 0x0f)) ^ mask;
}

/** Float samples in [-1, 1] to mu-law bytes. */
export function encode(floats) {
  const out = new Uint8Array(floats.length);
  for (let i = 0; i < floats.length; i++) out[i] = encodeSample(Math.round(floats[i] * 32767));
  return out;
}

/** Mu-law bytes to float samples in [-1, 1]. */
export function decode(bytes) {
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = DECODE[bytes[i]] / 32768;
  return out;
}

export function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
