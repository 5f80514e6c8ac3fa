"""Would a local VAD (WebRTC's, ``webrtcvad-wheels``) detect a barge-in sooner than the
STT's speech_started, and what would it cost per call?

    pip install 'webrtcvad-wheels>=2.0.14'
    python bench/local_vad.py [--live-runs 5]
    python -m bridge bench --resampler      # the host-speed marker, same session

Three measurements, all on this machine, nothing remote:

1. **Detection delay, frame by frame** (deterministic): the caller clips after 400 ms of
   line noise, cut into the 20 ms μ-law frames Twilio sends, fed to the transcription
   stand-in's VAD (``bridge.devtools.sim.vad.EnergyVad`` with the bridge's settings:
   threshold 0.5, 60 ms of speech to confirm) and to WebRTC's VAD (modes 1-3, firing
   after 1, 2 or 3 voiced frames in a row).  Delay = audio fed when it fires - the
   speech onset (the first 20 ms window of the clip above -45 dBFS); negative means it
   fired in the noise before the speech.  False starts: how often each fires on 10 s of
   white line noise alone (-50 and -40 dBFS) and on a -50 dBFS 100 Hz hum.
2. **Live, through the cascade** (real sockets): a ``CascadeConnection`` streams paced
   20 ms frames to the Realtime transcription-session stand-in, and WebRTC's VAD runs on
   the same frames in the same loop as they are sent; the gap between its firing and
   ``SpeechStarted`` arriving from the stand-in is what a local VAD would save here.
3. **CPU**: µs per 20 ms frame (μ-law decode + ``Vad.is_speech``).

The stand-in's VAD is local and instant; a real STT's speech_started also waits for the
network both ways, which no local measurement shows: read (2) as a lower bound of what a
local VAD saves against a remote STT, and add your round trip to it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import random
import statistics
import sys
import time
import warnings
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import webrtcvad  # noqa: E402

from bridge.devtools.sim.clips import load_clip  # noqa: E402
from bridge.devtools.sim.vad import EnergyVad  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 160  # 20 ms of μ-law at 8 kHz
CLIPS = ("caller_question", "caller_interrupt", "caller_thanks")
LEAD_MS = 400
ONSET_DBFS = -45.0


def noise(ms: int, dbfs: float, seed: int) -> bytes:
    """White line noise at ``dbfs`` RMS, as μ-law (deterministic)."""
    rng = random.Random(seed)
    amp = 32768 * 10 ** (dbfs / 20) * 3**0.5  # uniform: rms = amp / sqrt(3)
    pcm = array("h", (int(rng.uniform(-amp, amp)) for _ in range(ms * 8)))
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def hum(ms: int, dbfs: float) -> bytes:
    """A 100 Hz hum (mains, a fan) at ``dbfs`` RMS, as μ-law."""
    amp = 32768 * 10 ** (dbfs / 20) * 2**0.5
    pcm = array("h", (int(amp * math.sin(2 * math.pi * 100 * i / 8000)) for i in range(ms * 8)))
    return audioop.lin2ulaw(pcm.tobytes(), 2)


def frames(ulaw: bytes) -> list[bytes]:
    return [ulaw[i:i + FRAME] for i in range(0, len(ulaw) - FRAME + 1, FRAME)]


def onset_ms(ulaw: bytes) -> int:
    for k, frame in enumerate(frames(ulaw)):
        rms = audioop.rms(audioop.ulaw2lin(frame, 2), 2)
        if rms and 20 * math.log10(rms / 32768) > ONSET_DBFS:
            return k * 20
    raise ValueError("no speech in the clip")


def energy_fires(ulaw: bytes) -> int | None:
    """Audio ms fed when the stand-in's VAD says speech_started (None: never)."""
    vad = EnergyVad(sample_rate=8000, threshold=0.5, prefix_padding_ms=300,
                    silence_duration_ms=500, min_speech_ms=60)
    for k, frame in enumerate(frames(ulaw)):
        if any(e.kind == "started" for e in vad.feed(audioop.ulaw2lin(frame, 2))):
            return (k + 1) * 20
    return None


def webrtc_fires(ulaw: bytes, mode: int, run: int) -> int | None:
    vad = webrtcvad.Vad(mode)
    voiced = 0
    for k, frame in enumerate(frames(ulaw)):
        voiced = voiced + 1 if vad.is_speech(audioop.ulaw2lin(frame, 2), 8000) else 0
        if voiced >= run:
            return (k + 1) * 20
    return None


def false_starts(ulaw: bytes, fires: object) -> int:
    """Separate firings over ``ulaw`` (re-armed after each), for noise-only audio."""
    count, rest = 0, ulaw
    while len(rest) >= FRAME:
        at = fires(rest)  # type: ignore[operator]
        if at is None:
            break
        count += 1
        rest = rest[at * 8 + 8 * 500:]  # skip the turn a false start would begin
    return count


def offline() -> None:
    configs: list[tuple[str, object]] = [("stand-in energy VAD (60 ms)", energy_fires)]
    for mode in (1, 2, 3):
        for run in (1, 2, 3):
            configs.append((f"webrtcvad mode {mode}, {run} frame(s)",
                            lambda u, m=mode, r=run: webrtc_fires(u, m, r)))
    conditions = [("clean", -76.0), ("line noise -50 dBFS", -50.0),
                  ("line noise -40 dBFS", -40.0)]
    print("1. detection delay after the speech onset, ms (3 caller clips), and false starts")
    print(f"{'detector':32} " + "  ".join(f"{c:>22}" for c, _ in conditions)
          + "  false starts in 10 s: noise -50 / noise -40 / hum -50")
    for name, fires in configs:
        cells = []
        for _label, level in conditions:
            delays = []
            for i, clip in enumerate(CLIPS):
                audio = load_clip(clip)
                audio = audio[: len(audio) - len(audio) % 8]
                onset = LEAD_MS + onset_ms(audio)
                lead = noise(LEAD_MS, level, i) if level > -70 else b"\xff" * (LEAD_MS * 8)
                mixed = lead + audio
                if level > -70:  # mixed as linear PCM, then back to μ-law
                    speech = audioop.ulaw2lin(audio, 2)
                    line = audioop.ulaw2lin(noise(len(audio) // 8, level, 10 + i), 2)
                    mixed = lead + audioop.lin2ulaw(audioop.add(speech, line, 2), 2)
                at = fires(mixed)  # type: ignore[operator]
                delays.append("never" if at is None else str(at - onset))
            cells.append("/".join(delays))
        fs = (false_starts(noise(10_000, -50.0, 98), fires),
              false_starts(noise(10_000, -40.0, 99), fires),
              false_starts(hum(10_000, -50.0), fires))
        print(f"{name:32} " + "  ".join(f"{c:>22}" for c in cells)
              + f"  {fs[0]:>5} / {fs[1]} / {fs[2]}")


async def live(runs: int, mode: int, run: int) -> None:
    from bridge.cascade.connection import CascadeConnection
    from bridge.cascade.settings import CascadeSettings, LlmSettings, SttSettings, TtsSettings
    from bridge.config import AgentConfig, Secret
    from bridge.core.actions import AppendAudio, ConfigureSession
    from bridge.core.events import SpeechStarted
    from bridge.devtools.sim.openai_rest import OpenAIRestSimulator
    from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator

    key = Secret("sk-local-vad-bench")
    gaps: list[float] = []
    async with OpenAIRestSimulator(api_key=key) as rest, \
            TranscriptionSimulator(api_key=key) as stt:
        settings = CascadeSettings(
            stt=SttSettings(realtime_url=stt.url, base_url=rest.base_url, api_key=key),
            llm=LlmSettings(base_url=rest.base_url, api_key=key),
            tts=TtsSettings(base_url=rest.base_url, api_key=key))
        for i in range(runs):
            conn = CascadeConnection(settings)
            await conn.open()
            conn.send(ConfigureSession(agent=AgentConfig(), audio_mode="passthrough",
                                       model="cascade"))
            started: list[float] = []

            async def watch(conn: CascadeConnection = conn, started: list[float] = started
                            ) -> None:
                async for event in conn.events():
                    if isinstance(event, SpeechStarted):
                        started.append(time.monotonic())

            watcher = asyncio.create_task(watch())
            audio = b"\xff" * (LEAD_MS * 8) + load_clip(CLIPS[i % len(CLIPS)])
            vad, voiced, local_at = webrtcvad.Vad(mode), 0, None
            t0 = time.monotonic()
            for k, frame in enumerate(frames(audio)):
                await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
                conn.send(AppendAudio(base64.b64encode(frame).decode()))
                voiced = voiced + 1 if vad.is_speech(audioop.ulaw2lin(frame, 2), 8000) else 0
                if voiced >= run and local_at is None:
                    local_at = time.monotonic()
                if started and local_at is not None:
                    break
            await asyncio.sleep(0.2)
            await conn.close()
            watcher.cancel()
            if started and local_at is not None:
                gaps.append((started[0] - local_at) * 1000)
    print(f"\n2. live: SpeechStarted from the stand-in minus webrtcvad (mode {mode}, {run} frames)"
          f" on the same paced frames, ms: {', '.join(f'{g:.0f}' for g in gaps)}"
          f" (median {statistics.median(gaps):.0f})")


def cpu() -> None:
    audio = load_clip("caller_question") + load_clip("caller_interrupt")
    ulaw = frames(audio)
    results = []
    for mode in (1, 3):
        vad = webrtcvad.Vad(mode)
        best = []
        for _ in range(7):
            t = time.perf_counter()
            for f in ulaw:
                vad.is_speech(audioop.ulaw2lin(f, 2), 8000)
            best.append((time.perf_counter() - t) / len(ulaw) * 1e6)
        results.append((mode, statistics.median(best)))
    print("\n3. CPU per 20 ms frame (μ-law decode + is_speech), median of 7 passes: "
          + ", ".join(f"mode {m} {us:.1f} µs" for m, us in results)
          + f"; per call: {results[-1][1] / 20000 * 100:.3f}% of a core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live-runs", type=int, default=6)
    parser.add_argument("--mode", type=int, default=2, help="webrtcvad mode for the live run")
    parser.add_argument("--frames", type=int, default=2, help="voiced frames in a row")
    args = parser.parse_args()
    offline()
    asyncio.run(live(args.live_runs, args.mode, args.frames))
    cpu()


if __name__ == "__main__":
    main()
