"""Measured properties of the streaming x3 resamplers, both directions.

Every figure is measured through ``process()`` on int16 bytes, the way the bridge uses it,
never read off the filter coefficients: frame sizes, delay (cross-correlation and impulse
response), alias/image rejection and passband flatness (windowed FFT of coherent tones),
chunk-invariance and odd-byte carry.

Spectra use a 4-term Blackman-Harris window (-92 dB sidelobes): a plain Blackman or Hann
window leaks at about -58/-31 dB and could not show a -60 dB floor honestly. Tones sit on
exact FFT bins of the analysed span, so leakage is negligible either way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio.resampler import (
    _COEF_BITS,
    _PROTOTYPE,
    HIGH_RATE,
    LOW_RATE,
    Downsampler,
    Upsampler,
)

FloatArray = npt.NDArray[np.float64]
Resampler = Upsampler | Downsampler

MAX_DELAY_MS = 5.0
MIN_REJECTION_DB = 60.0
MAX_PASSBAND_SPAN_DB = 1.0
PASSBAND_EDGE_HZ = 3300.0
FULL_SCALE = 32000.0
SETTLE_S = 0.02  # skip the start-up transient (filter delay is ~3 ms)
SPAN_S = 0.5  # analysed span: 2 Hz bins at either rate


def _pcm(x: FloatArray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _samples(pcm: bytes) -> FloatArray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _tone(freq: float, rate: int, seconds: float, amp: float = FULL_SCALE) -> FloatArray:
    return amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)


def _rates(cls: type[Resampler]) -> tuple[int, int]:
    return (LOW_RATE, HIGH_RATE) if cls is Upsampler else (HIGH_RATE, LOW_RATE)


def _expected_out(cls: type[Resampler], n_in: int) -> int:
    return 3 * n_in if cls is Upsampler else n_in // 3


def _amplitude_spectrum(x: FloatArray, rate: int) -> tuple[FloatArray, FloatArray]:
    """Blackman-Harris windowed spectrum, scaled so a bin-centred tone reads its amplitude."""
    k = np.arange(x.size)
    a = (0.35875, 0.48829, 0.14128, 0.01168)
    w = sum((-1) ** i * c * np.cos(2 * np.pi * i * k / x.size) for i, c in enumerate(a))
    mags = np.abs(np.fft.rfft(x * w)) / (w.sum() / 2)
    return np.fft.rfftfreq(x.size, 1 / rate).astype(np.float64), mags


def _through(cls: type[Resampler], signal: FloatArray) -> FloatArray:
    """Run ``signal`` through a fresh resampler in 20 ms frames; return the settled span."""
    in_rate, out_rate = _rates(cls)
    r = cls()
    frame = in_rate // 50
    pcm = _pcm(signal)
    out = b"".join(r.process(pcm[i : i + 2 * frame]) for i in range(0, len(pcm), 2 * frame))
    y = _samples(out)
    start = round(SETTLE_S * out_rate)
    return y[start : start + round(SPAN_S * out_rate)]


def _stimulus_seconds() -> float:
    return SETTLE_S + SPAN_S + 0.02


# --- framing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "frame_in", "frame_out"), [(Upsampler, 160, 480), (Downsampler, 480, 160)]
)
def test_every_20ms_frame_gives_exactly_20ms(
    cls: type[Resampler], frame_in: int, frame_out: int
) -> None:
    r = cls()
    rng = np.random.default_rng(7)
    for _ in range(50):  # including the very first frame: no warm-up hold-back
        frame = _pcm(rng.normal(0, 8000, frame_in))
        assert len(r.process(frame)) == 2 * frame_out


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
@pytest.mark.parametrize("seed", range(4))
def test_chunked_equals_whole_and_output_is_never_held_back(
    cls: type[Resampler], seed: int
) -> None:
    """Random chunk sizes (odd bytes, partial groups, empty) give bit-identical output,
    and after every call exactly the floor-consistent number of samples has come out."""
    rng = np.random.default_rng(seed)
    in_rate, _ = _rates(cls)
    n = in_rate // 2
    t = np.arange(n) / in_rate
    # Noise plus tones driven into clipping, so saturation is exercised across boundaries.
    signal = rng.normal(0, 6000, n) + 40000 * np.sin(2 * np.pi * 440 * t) * (t > 0.3)
    pcm = _pcm(signal)
    whole = cls().process(pcm)

    r = cls()
    pieces: list[bytes] = []
    pos = 0
    while pos < len(pcm):
        size = int(rng.choice([0, 1, 2, 3, 5, int(rng.integers(0, 2000)), 20001]))  # big: regrow
        pieces.append(r.process(pcm[pos : pos + size]))
        pos = min(pos + size, len(pcm))
        emitted = sum(len(p) for p in pieces)
        assert emitted == 2 * _expected_out(cls, pos // 2)
    assert b"".join(pieces) == whole
    assert len(whole) == 2 * _expected_out(cls, len(pcm) // 2)


def test_odd_bytes_and_partial_groups_are_carried() -> None:
    d = Downsampler()
    pcm = _pcm(np.array([1000.0, -2000.0, 3000.0, 4000.0, 5000.0, 6000.0]))
    assert d.process(pcm[:1]) == b""  # half a sample
    assert d.process(pcm[1:4]) == b""  # two samples: not yet a group of three
    assert len(d.process(pcm[4:7])) == 2  # third sample plus half of the fourth
    assert len(d.process(pcm[7:])) == 2  # rest of the second group
    u = Upsampler()
    assert len(u.process(pcm[:3])) == 2 * 3  # one whole sample in, three out
    assert len(u.process(pcm[3:])) == 2 * 3 * 5  # carried byte completes the second sample


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
def test_reset_forgets_history_and_carry(cls: type[Resampler]) -> None:
    rng = np.random.default_rng(3)
    pcm = _pcm(rng.normal(0, 8000, 999))
    r = cls()
    r.process(pcm[:1001])  # leaves history and a dangling byte
    r.reset()
    assert r.process(pcm) == cls().process(pcm)


def _direct(cls: type[Resampler], pcm: bytes) -> bytes:
    """The textbook computation of what ``cls`` must output for ``pcm``: zero-stuff (up) or
    filter then keep every third sample (down), with the full prototype and no polyphase or
    blocking tricks. The prototype's integer taps keep every sum exact, so the streaming,
    blocked implementation has to match it bit for bit, not approximately."""
    x = _samples(pcm)
    h = _PROTOTYPE
    if cls is Upsampler:
        stuffed = np.zeros(3 * x.size)
        stuffed[::3] = x
        y = np.convolve(stuffed, h)[: stuffed.size] * 2.0**-_COEF_BITS
    else:
        y = np.convolve(x, h)[2 : 3 * (x.size // 3) : 3] * (2.0**-_COEF_BITS / 3)
    return _pcm(y)


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
@pytest.mark.parametrize("frame", [1, 2, 7, 160, 480, 481, 2400, 10000])
def test_output_equals_direct_convolution(cls: type[Resampler], frame: int) -> None:
    """Whatever mix of full 16-output blocks and single rows a chunk size produces (and
    across the internal slicing of large chunks), the output is the direct filter's."""
    rng = np.random.default_rng(frame)
    t = np.arange(12000) / 8000
    pcm = _pcm(rng.normal(0, 9000, t.size) + 45000 * np.sin(2 * np.pi * 700 * t) * (t > 1))
    r = cls()
    out = b"".join(r.process(pcm[i : i + 2 * frame]) for i in range(0, len(pcm), 2 * frame))
    assert out == _direct(cls, pcm)


# --- delay ---------------------------------------------------------------------------------


def _multitone(rate: int, seconds: float, rng: np.random.Generator) -> FloatArray:
    """Band-limited (200-3200 Hz) multitone, evaluated exactly at ``rate``."""
    freqs = rng.uniform(200, 3200, 40)
    phases = rng.uniform(0, 2 * np.pi, 40)
    t = np.arange(round(seconds * rate)) / rate
    x = np.cos(2 * np.pi * np.outer(t, freqs) + phases).sum(axis=1)
    return x


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
def test_delay_measured_by_cross_correlation(cls: type[Resampler]) -> None:
    """Correlate the output with the same band-limited signal sampled at the output rate."""
    in_rate, out_rate = _rates(cls)
    seconds = 0.3
    x_in = _multitone(in_rate, seconds, np.random.default_rng(11))
    x_ref = _multitone(out_rate, seconds, np.random.default_rng(11))
    scale = 12000 / np.abs(x_in).max()
    y = _samples(cls().process(_pcm(scale * x_in)))
    max_lag = round(0.010 * out_rate)
    ref = x_ref[: y.size - max_lag]
    corr = np.array([np.dot(y[lag : lag + ref.size], ref) for lag in range(max_lag)])
    k = int(np.argmax(corr))
    c0, c1, c2 = corr[k - 1], corr[k], corr[k + 1]
    lag = k + 0.5 * (c0 - c2) / (c0 - 2 * c1 + c2)  # parabolic peak refinement
    measured_ms = 1000 * lag / out_rate
    assert measured_ms <= MAX_DELAY_MS
    assert measured_ms == pytest.approx(cls().delay_ms, abs=0.02)


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
def test_impulse_response_is_symmetric_about_the_delay(cls: type[Resampler]) -> None:
    """Linear phase: the delay is the same at every frequency, not just on average."""
    in_rate, out_rate = _rates(cls)
    x = np.zeros(in_rate // 50)
    x[3 * 10] = 30000.0  # on a group boundary, so the decimator samples the filter centre
    y = _samples(cls().process(_pcm(x)))
    start = 3 * 10 * out_rate // in_rate
    centre = start + round(cls().delay_ms * out_rate / 1000)
    assert int(np.argmax(y)) == centre
    half = centre - start
    assert 1000 * half / out_rate <= MAX_DELAY_MS
    left = y[start : centre + 1]
    right = y[centre : centre + half + 1][::-1]
    assert np.max(np.abs(left - right)) <= 1.0  # equal up to output rounding
    assert np.all(np.abs(y[centre + half + 1 :]) == 0)  # finite support: nothing leaks on


# --- spectrum ------------------------------------------------------------------------------


def _reference_level(cls: type[Resampler]) -> float:
    in_rate, out_rate = _rates(cls)
    _, mags = _amplitude_spectrum(
        _through(cls, _tone(1000, in_rate, _stimulus_seconds())), out_rate
    )
    return float(mags.max())


@pytest.mark.parametrize(
    "freq", [4002, 4100, 4500, 5000, 6000, 7000, 8000, 9000, 10000, 11000, 11900]
)
def test_downsampler_rejects_aliases(freq: float) -> None:
    """A full-scale tone above 4 kHz leaves nothing above -60 dB anywhere in 0-4 kHz."""
    ref = _reference_level(Downsampler)
    y = _through(Downsampler, _tone(freq, HIGH_RATE, _stimulus_seconds()))
    _, mags = _amplitude_spectrum(y, LOW_RATE)
    worst_db = 20 * np.log10(max(mags.max(), 1e-3) / ref)
    assert worst_db < -MIN_REJECTION_DB, f"{freq} Hz aliases at {worst_db:.1f} dB"


@pytest.mark.parametrize("freq", [300, 1000, 2000, 3000, 3300])
def test_upsampler_rejects_images(freq: float) -> None:
    """A full-scale passband tone leaves nothing above -60 dB (re. itself) above 4 kHz."""
    y = _through(Upsampler, _tone(freq, LOW_RATE, _stimulus_seconds()))
    freqs, mags = _amplitude_spectrum(y, HIGH_RATE)
    worst_db = 20 * np.log10(max(mags[freqs >= 4000].max(), 1e-3) / mags.max())
    assert worst_db < -MIN_REJECTION_DB, f"{freq} Hz images at {worst_db:.1f} dB"


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
def test_passband_is_flat_at_unity_gain(cls: type[Resampler]) -> None:
    in_rate, out_rate = _rates(cls)
    gains_db = []
    for freq in [*range(100, int(PASSBAND_EDGE_HZ), 400), PASSBAND_EDGE_HZ]:
        y = _through(cls, _tone(freq, in_rate, _stimulus_seconds()))
        freqs, mags = _amplitude_spectrum(y, out_rate)
        level = mags[np.argmin(np.abs(freqs - freq))]
        gains_db.append(20 * np.log10(level / FULL_SCALE))
    assert max(gains_db) - min(gains_db) <= MAX_PASSBAND_SPAN_DB
    assert max(abs(g) for g in gains_db) <= MAX_PASSBAND_SPAN_DB / 2


@pytest.mark.parametrize("cls", [Upsampler, Downsampler])
def test_dc_passes_at_exactly_unity(cls: type[Resampler]) -> None:
    in_rate, _ = _rates(cls)
    y = _samples(cls().process(_pcm(np.full(in_rate // 10, 12345.0))))
    assert np.all(y[y.size // 2 :] == 12345)


# --- saturation ----------------------------------------------------------------------------


def test_overshoot_saturates_instead_of_wrapping() -> None:
    """A loud square wave rings past int16 after interpolation (Gibbs): it must clip.

    The filter is linear, so the loud output must equal twice the half-level output
    clipped to int16 (within the two outputs' rounding), including at the overshoots,
    where wrapping would flip the sign.
    """
    t = np.arange(LOW_RATE // 10)
    square = np.where((t // 8) % 2 == 0, 32000.0, -32000.0)  # 500 Hz
    loud = _samples(Upsampler().process(_pcm(square)))
    half = _samples(Upsampler().process(_pcm(square / 2)))
    assert np.any(np.abs(2 * half) > 32767)  # the loud one really overshoots
    assert np.max(np.abs(loud - np.clip(2 * half, -32768, 32767))) <= 1.0
