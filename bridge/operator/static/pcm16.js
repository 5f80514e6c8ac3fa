// PCM16LE mono, the softphone's other wire encoding (negotiated as "softphone.pcm16",
// at 24 kHz).  The bridge resamples it to and from the call's 8 kHz itself.

/** Float samples in [-1, 1] to little-endian 16-bit bytes. */
export function encode(floats) {
  const view = new DataView(new ArrayBuffer(floats.length * 2));
  for (let i = 0; i < floats.length; i++) {
    const v = Math.max(-1, Math.min(1, floats[i]));
    view.setInt16(2 * i, Math.round(v * 32767), true);
  }
  return new Uint8Array(view.buffer);
}

/** Little-endian 16-bit bytes to float samples in [-1, 1]. */
export function decode(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}
