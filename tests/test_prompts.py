"""Bundled prompts and configured prompt files (filler and apology audio)."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
import wave
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from bridge.audio.mulaw import ulaw_to_pcm16
from bridge.audio.prompts import BUNDLED_PROMPTS, PromptFileError, bundled_prompt, load_prompt

REPO = Path(__file__).resolve().parents[1]


def rms_db(ulaw: bytes) -> float:
    samples = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    return 20 * math.log10((float(np.sqrt(np.mean(samples**2))) or 1.0) / 32768)


def test_bundled_prompts_are_short_audible_mulaw_with_transcripts() -> None:
    texts = json.loads(
        resources.files("bridge.audio").joinpath("clips", "clips.json").read_text("utf-8")
    )
    assert set(texts) == set(BUNDLED_PROMPTS)
    assert texts["one_moment"] == "One moment, please."
    for name in BUNDLED_PROMPTS:
        ulaw = bundled_prompt(name)
        assert 0.5 < len(ulaw) / 8000 < 8.0, name
        assert rms_db(ulaw) > -30, f"{name} is (nearly) silent"
    assert len(bundled_prompt("one_moment")) < len(bundled_prompt("apology"))
    with pytest.raises(KeyError):
        bundled_prompt("nope")


def write_pcm_wav(path: Path, rate: int, channels: int, seconds: float = 1.0) -> None:
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.3 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    frames = np.repeat(tone, channels) if channels > 1 else tone
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())


def write_mulaw_wav(path: Path, ulaw: bytes, rate: int = 8000) -> None:
    fmt = struct.pack("<HHIIHH", 7, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(ulaw)) + ulaw
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (44100, 2)])
def test_pcm_wav_of_any_rate_becomes_8k_mulaw(tmp_path: Path, rate: int, channels: int) -> None:
    path = tmp_path / "filler.wav"
    write_pcm_wav(path, rate, channels)
    ulaw = load_prompt(path)
    assert abs(len(ulaw) - 8000) <= 2  # one second at 8 kHz
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm))
    assert abs(np.argmax(spectrum) * 8000 / len(pcm) - 440) < 5  # still a 440 Hz tone


def test_mulaw_wav_and_raw_mulaw_load_byte_for_byte(tmp_path: Path) -> None:
    ulaw = bundled_prompt("one_moment")
    wav = tmp_path / "m.wav"
    write_mulaw_wav(wav, ulaw)
    assert load_prompt(wav) == ulaw
    raw = tmp_path / "m.ulaw"
    raw.write_bytes(ulaw)
    assert load_prompt(raw) == ulaw


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("empty.ulaw", b"", "empty"),
        ("x.mp3", b"ID3\x03" + b"\0" * 2000, "not a WAV file"),
        ("bad.wav", b"this is not a wav" * 100, "not a RIFF/WAVE"),
        ("tiny.ulaw", b"\xff" * 100, "shorter than"),
        ("long.ulaw", b"\xff" * (8000 * 31), "under 30 s"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path: Path, name: str, content: bytes,
                                     fragment: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptFileError) as info:
        load_prompt(path)
    assert fragment in str(info.value) and name in str(info.value)


def test_unsupported_wav_encodings_and_missing_files(tmp_path: Path) -> None:
    alaw = tmp_path / "a.wav"
    write_mulaw_wav(alaw, b"\xd5" * 8000)
    mulaw_tag, alaw_tag = struct.pack("<HH", 7, 1), struct.pack("<HH", 6, 1)
    alaw.write_bytes(alaw.read_bytes().replace(mulaw_tag, alaw_tag, 1))
    with pytest.raises(PromptFileError, match="unsupported WAV encoding"):
        load_prompt(alaw)
    wrong_rate = tmp_path / "r.wav"
    write_mulaw_wav(wrong_rate, b"\xff" * 16000, rate=16000)
    with pytest.raises(PromptFileError, match="must be 8000 Hz"):
        load_prompt(wrong_rate)
    with pytest.raises(PromptFileError, match="cannot read"):
        load_prompt(tmp_path / "missing.wav")


@pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="espeak-ng and sox not installed (apt-get install espeak-ng sox)",
)
def test_the_generation_script_reproduces_the_committed_clips(tmp_path: Path) -> None:
    """The committed clips are what the documented script makes (same Debian packages)."""
    copy = tmp_path / "repo"
    (copy / "bridge" / "audio").mkdir(parents=True)
    shutil.copytree(REPO / "tooling", copy / "tooling")
    subprocess.run(["bash", str(copy / "tooling" / "make_prompt_clips.sh")], check=True,
                   capture_output=True, timeout=60)
    for name in BUNDLED_PROMPTS:
        made = (copy / "bridge" / "audio" / "clips" / f"{name}.ulaw").read_bytes()
        assert abs(len(made) - len(bundled_prompt(name))) <= 800, name  # within 0.1 s


def test_configured_prompt_files_are_checked_at_start_up(tmp_path: Path) -> None:
    from bridge.config import ConfigError, load_settings

    good = tmp_path / "hold.ulaw"
    good.write_bytes(bundled_prompt("one_moment"))
    bad = tmp_path / "apology.wav"
    bad.write_bytes(b"not audio at all" * 10)
    settings = load_settings({"BRIDGE_FILLER_AUDIO": str(good)})
    assert settings.filler_audio == str(good) and settings.apology_audio is None
    with pytest.raises(ConfigError) as info:
        load_settings({"BRIDGE_APOLOGY_AUDIO": str(bad), "BRIDGE_MAX_PENDING_STREAMS": "0",
                       "BRIDGE_START_TIMEOUT_S": "soon"})
    problems = "\n".join(info.value.problems)
    assert "BRIDGE_APOLOGY_AUDIO" in problems and "not a RIFF/WAVE" in problems
    assert "BRIDGE_MAX_PENDING_STREAMS" in problems and "BRIDGE_START_TIMEOUT_S" in problems
