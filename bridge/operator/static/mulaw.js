// G.711 mu-law, as Twilio Media Streams carry it (8 kHz, one byte per sample).
// Written out here (a page has no audioop); tests check it against Python's audioop.
const BIAS = 0x84;
const CLIP = 32635;

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

export function encodeSample(pcm) {
  let sample = Math.max(-32768, Math.min(32767, pcm | 0));
  const sign = sample < 0 ? 0x80 : 0;
  if (sign) sample = -sample;
  if (sample > CLIP) sample = CLIP;
  sample += BIAS;
  let exponent = 7;
  for (let mask = 0x4000; (sample & mask) === 0 && exponent > 0; mask >>= 1) exponent--;
  const mantissa = (sample >> (exponent + 3)) & 0x0f;
  return ~(sign | (exponent << 4) | mantissa) & 0xff;
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
