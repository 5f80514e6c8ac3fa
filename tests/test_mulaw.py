"""mu-law codec and the per-call ``Pcm16Transcoder`` (codec + both resamplers)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import Downsampler, Pcm16Transcoder, Upsampler, pcm16_to_ulaw, ulaw_to_pcm16

FloatArray = npt.NDArray[np.float64]

ALL_CODES = bytes(range(256))
MULAW_MAX = 32124  # largest magnitude G.711 mu-law represents, in 16-bit units


def _decode(ulaw: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2")


# --- codec ---------------------------------------------------------------------------------


def test_decode_is_little_endian_g711() -> None:
    assert ulaw_to_pcm16(b"\x80") == MULAW_MAX.to_bytes(2, "little", signed=True)
    assert ulaw_to_pcm16(b"\x00") == (-MULAW_MAX).to_bytes(2, "little", signed=True)
    assert ulaw_to_pcm16(b"\xff\x7f") == b"\x00\x00\x00\x00"  # +0 and -0
    assert len(ulaw_to_pcm16(ALL_CODES)) == 2 * 256


def test_decode_is_monotonic_within_each_sign() -> None:
    pcm = _decode(ALL_CODES).astype(int)
    assert np.all(np.diff(pcm[0x00:0x80]) > 0)  # 0x00 most negative .. 0x7F -0
    assert np.all(np.diff(pcm[0x80:0x100]) < 0)  # 0x80 most positive .. 0xFF +0


def test_every_code_round_trips() -> None:
    """Encoding a decoded code gives the code back (only -0 comes back as +0)."""
    back = pcm16_to_ulaw(ulaw_to_pcm16(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF
    assert back == bytes(expected)


def test_encode_error_is_within_one_step_for_every_sample() -> None:
    """Exhaustive over int16: mu-law is logarithmic, so the error grows with the value
    (step 8 near zero, 1024 at the top) but stays under ~3% plus half the smallest step."""
    x = np.arange(-32768, 32768).astype(np.int16)
    y = _decode(pcm16_to_ulaw(x.astype("<i2").tobytes())).astype(int)
    inside = np.abs(x.astype(int)) <= MULAW_MAX
    err = np.abs(y - x.astype(int))
    assert np.all(err[inside] <= np.abs(x[inside].astype(int)) / 32 + 8)
    assert np.all(np.abs(y[~inside]) == MULAW_MAX)  # beyond the range: saturates


def test_encode_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="whole number of samples"):
        pcm16_to_ulaw(b"\x00\x00\x00")


def test_import_emits_no_deprecation_warning() -> None:
    code = "import bridge.audio.mulaw"
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- transcoder ----------------------------------------------------------------------------


def test_transcoder_frames_are_exact() -> None:
    t = Pcm16Transcoder()
    for _ in range(10):
        assert len(t.to_model(b"\x55" * 160)) == 960  # 20 ms mu-law 8k -> PCM16 24k
        assert len(t.to_twilio(b"\x10\x02" * 480)) == 160  # 20 ms PCM16 24k -> mu-law 8k


def test_transcoder_carries_odd_bytes_to_twilio() -> None:
    t = Pcm16Transcoder()
    sizes = [961, 959, 1, 3, 2, 954]  # 2880 bytes = 1440 samples at 24 kHz = 480 at 8 kHz
    out: list[bytes] = []
    pcm = b"\x00\x10" * (sum(sizes) // 2)
    pos = 0
    for size in sizes:
        out.append(t.to_twilio(pcm[pos : pos + size]))
        pos += size
    assert [len(o) for o in out] == [160, 160, 0, 0, 1, 159]


def test_round_trip_preserves_a_tone() -> None:
    """mu-law 8k -> 24k -> 8k -> mu-law through 20 ms frames: the tone comes back at the
    same level, delayed by the two filter delays, with only mu-law's own quantisation
    noise (~38 dB SNR for a loud tone) on top."""
    rate, freq, amp, phase = 8000, 1000.0, 16000.0, 0.3
    n = rate // 2
    t = np.arange(n) / rate
    ulaw = pcm16_to_ulaw(
        np.rint(amp * np.cos(2 * np.pi * freq * t + phase)).astype("<i2").tobytes()
    )
    tc = Pcm16Transcoder()
    back = b"".join(tc.to_twilio(tc.to_model(ulaw[i : i + 160])) for i in range(0, len(ulaw), 160))
    assert len(back) == len(ulaw)
    y = _decode(back).astype(np.float64)
    delay_s = (Upsampler().delay_ms + Downsampler().delay_ms) / 1000
    expected = amp * np.cos(2 * np.pi * freq * (t - delay_s) + phase)
    settled = slice(rate // 50, None)
    noise = y[settled] - expected[settled]
    snr_db = 10 * np.log10(np.mean(expected[settled] ** 2) / np.mean(noise**2))
    assert snr_db > 30


def test_reset_to_twilio_drops_the_interrupted_tail() -> None:
    t = Pcm16Transcoder()
    loud = np.rint(20000 * np.sin(np.arange(480) * 0.3)).astype("<i2").tobytes()
    t.to_twilio(loud + b"\x00")  # audio in the filter, plus a dangling byte
    t.reset_to_twilio()
    assert t.to_twilio(b"\x00" * 960) == b"\xff" * 160  # pure mu-law silence
