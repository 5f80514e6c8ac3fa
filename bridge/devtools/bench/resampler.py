"""Figures of merit for the streaming x3 resamplers: speed, delay, rejection, flatness.

Run ``python -m bridge bench --resampler [--frames N] [--runs R]``. It prints, per direction,
the median cost of one 20 ms frame (over ``--runs`` passes of ``--frames`` consecutive frames
through one instance, i.e. the steady state a call sees; downwards also fed as 100 ms deltas,
the size the Realtime API and the simulator send), the delay measured from the impulse
response, the worst alias/image level over a tone sweep, and the passband ripple; then the
same cost for the whole ``Pcm16Transcoder`` path (mu-law included) and what that means in
calls per core.

Speed is measured here rather than asserted in tests (docs/DEVELOPING.md): CPU timings are
machine-dependent and would make the test suite flaky.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from bridge.audio import Downsampler, Pcm16Transcoder, Upsampler, pcm16_to_ulaw
from bridge.audio.resampler import HIGH_RATE, LOW_RATE

FloatArray = npt.NDArray[np.float64]
FRAMES_PER_SECOND = 50  # Twilio sends 20 ms frames
AMPLITUDE = 32000.0


def _pcm(x: FloatArray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _frames(rate: int, count: int, seed: int = 0) -> list[bytes]:
    """Noise-like 20 ms frames (content does not affect the cost, but avoid all-zero)."""
    size = rate // FRAMES_PER_SECOND
    pcm = _pcm(np.random.default_rng(seed).normal(0, 6000, size * count))
    return [pcm[2 * size * i : 2 * size * (i + 1)] for i in range(count)]


def _us_per_frame(step: Callable[[bytes], bytes], frames: list[bytes], runs: int) -> float:
    """Median over ``runs`` of the mean cost of one frame in a pass over ``frames``."""
    step(frames[0])  # warm up caches and the cached window view
    per_run = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        for frame in frames:
            step(frame)
        per_run.append((time.perf_counter_ns() - start) / len(frames) / 1000)
    return statistics.median(per_run)


def measured_delay_ms(cls: type[Upsampler] | type[Downsampler]) -> float:
    """Position of the impulse-response peak (the centre of the linear-phase filter)."""
    in_rate, out_rate = (LOW_RATE, HIGH_RATE) if cls is Upsampler else (HIGH_RATE, LOW_RATE)
    x = np.zeros(in_rate // FRAMES_PER_SECOND)
    at = 30  # a multiple of 3: on a decimator group boundary
    x[at] = 30000.0
    y = _samples(cls().process(_pcm(x)))
    return 1000 * (int(np.argmax(y)) - at * out_rate // in_rate) / out_rate


def _amplitude_spectrum(x: FloatArray, rate: int) -> tuple[FloatArray, FloatArray]:
    """4-term Blackman-Harris spectrum (-92 dB sidelobes), a bin-centred tone reads its peak."""
    k = np.arange(x.size)
    a = (0.35875, 0.48829, 0.14128, 0.01168)
    w = sum((-1) ** i * c * np.cos(2 * np.pi * i * k / x.size) for i, c in enumerate(a))
    freqs = np.fft.rfftfreq(x.size, 1 / rate).astype(np.float64)
    return freqs, np.abs(np.fft.rfft(x * w)) / (w.sum() / 2)


def _tone_response(
    cls: type[Upsampler] | type[Downsampler], freq: float
) -> tuple[FloatArray, FloatArray]:
    """Spectrum of 0.5 s of settled output for a full-scale input tone (2 Hz bins)."""
    in_rate, out_rate = (LOW_RATE, HIGH_RATE) if cls is Upsampler else (HIGH_RATE, LOW_RATE)
    n = in_rate * 54 // 100
    x = AMPLITUDE * np.sin(2 * np.pi * freq * np.arange(n) / in_rate)
    y = _samples(cls().process(_pcm(x)))
    settle = out_rate // FRAMES_PER_SECOND
    return _amplitude_spectrum(y[settle : settle + out_rate // 2], out_rate)


def image_rejection_db() -> float:
    """Worst level above 4 kHz, re. the full-scale input, for tones 100-3998 Hz.

    The sweep runs into the 3.3-4 kHz transition band (finely there), whose images fall
    closest to the 4 kHz stopband edge.
    """
    worst = -np.inf
    for freq in [*range(100, 3300, 100), *range(3300, 4000, 10), 3998]:
        freqs, mags = _tone_response(Upsampler, freq)
        worst = max(worst, _db(mags[freqs >= LOW_RATE / 2].max() / AMPLITUDE))
    return worst


def alias_rejection_db() -> float:
    """Worst level anywhere in 0-4 kHz, re. a full-scale 1 kHz tone, for tones 4.002-11.9 kHz.

    Finely swept just above 4 kHz, where the stopband's first (largest) lobe is.
    """
    _, ref = _tone_response(Downsampler, 1000)
    worst = -np.inf
    for freq in [4002, *range(4010, 4600, 10), *range(4600, 12000, 100)]:
        _, mags = _tone_response(Downsampler, freq)
        worst = max(worst, _db(mags.max() / ref.max()))
    return worst


def _db(ratio: float) -> float:
    """Level in dB; an all-zero output (below int16 resolution) reads as -inf."""
    return float(20 * np.log10(ratio)) if ratio > 0 else -np.inf


def passband_ripple_db(cls: type[Upsampler] | type[Downsampler]) -> float:
    """Peak-to-peak gain variation over 100-3300 Hz."""
    gains = []
    for freq in range(100, 3301, 100):
        freqs, mags = _tone_response(cls, freq)
        gains.append(_db(mags[np.argmin(np.abs(freqs - freq))] / AMPLITUDE))
    return max(gains) - min(gains)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--frames", type=int, default=1000, help="frames per timed pass")
    parser.add_argument("--runs", type=int, default=7, help="timed passes (median reported)")
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Print the figures for ``args.frames`` frames x ``args.runs`` passes."""
    if args.frames < 5 or args.runs < 1:
        print("bench: --frames must be >= 5 and --runs >= 1", file=sys.stderr)
        return 2

    low = _frames(LOW_RATE, args.frames)
    high = _frames(HIGH_RATE, args.frames, seed=1)
    ulaw = [pcm16_to_ulaw(f) for f in low]
    up_us = _us_per_frame(Upsampler().process, low, args.runs)
    down_us = _us_per_frame(Downsampler().process, high, args.runs)
    deltas = [b"".join(high[i : i + 5]) for i in range(0, len(high) - 4, 5)]
    down_delta_us = _us_per_frame(Downsampler().process, deltas, args.runs) / 5
    tc = Pcm16Transcoder()
    to_model_us = _us_per_frame(tc.to_model, ulaw, args.runs)
    to_twilio_us = _us_per_frame(tc.to_twilio, high, args.runs)

    print(
        f"streaming x3 polyphase FIR | Python {platform.python_version()}, "
        f"numpy {np.__version__} | median of {args.runs} x {args.frames} frames"
    )
    print(f"{'':22}{'us/20ms frame':>14}{'delay ms':>10}{'rejection dB':>14}{'ripple dB':>11}")
    rows: list[tuple[str, float, type[Upsampler] | type[Downsampler], float, str]] = [
        ("up   8k -> 24k", up_us, Upsampler, image_rejection_db(), "images >4k"),
        ("down 24k -> 8k", down_us, Downsampler, alias_rejection_db(), "aliases"),
    ]
    for name, us, cls, rejection, what in rows:
        print(
            f"{name:22}{us:14.1f}{measured_delay_ms(cls):10.3f}{rejection:14.1f}"
            f"{passband_ripple_db(cls):11.3f}  ({what})"
        )
    print(f"{'down, 100 ms deltas':22}{down_delta_us:14.1f}  (per 20 ms of audio)")
    print(f"{'transcoder to_model':22}{to_model_us:14.1f}  (mu-law decode + up)")
    print(f"{'transcoder to_twilio':22}{to_twilio_us:14.1f}  (down + mu-law encode)")
    per_call_us = FRAMES_PER_SECOND * (to_model_us + to_twilio_us)
    print(
        f"one call, both directions: {per_call_us / 1e4:.2f}% of a core "
        f"(~{1e6 / per_call_us:.0f} calls per core for audio alone)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
