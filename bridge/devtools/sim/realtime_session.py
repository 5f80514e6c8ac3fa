"""Session configuration of the Realtime simulator, in both wire dialects.

The simulator keeps one dialect-neutral :class:`SessionConfig` per connection and
translates at the edges: ``session.update`` payloads are validated and merged from the
GA or beta shape, and ``session.created``/``session.updated`` render the full effective
session back in the connection's dialect. Keeping the translation here (and strict:
unknown or other-dialect fields are rejected like the real API does) is what makes the
simulator catch a bridge that sends a beta-shaped update to a GA endpoint or vice versa.

Sources: openai-python ``types/realtime/*`` (GA) and ``types/beta/realtime/*`` (beta);
error codes/messages as observed from the real service (see PROTOCOLS.md B4/B6).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Dialect",
    "SessionConfig",
    "SessionUpdateError",
    "apply_update",
    "bytes_per_ms",
    "render_session",
]

Dialect = Literal["ga", "beta"]
AudioFormat = Literal["pcmu", "pcma", "pcm"]

DEFAULT_INSTRUCTIONS = (
    "Your knowledge cutoff is 2023-10. You are a helpful, witty, and friendly AI."
)
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")

_GA_FORMATS: dict[str, AudioFormat] = {
    "audio/pcm": "pcm",
    "audio/pcmu": "pcmu",
    "audio/pcma": "pcma",
}
_BETA_FORMATS: dict[str, AudioFormat] = {"pcm16": "pcm", "g711_ulaw": "pcmu", "g711_alaw": "pcma"}
_BETA_FORMAT_NAMES: dict[AudioFormat, str] = {v: k for k, v in _BETA_FORMATS.items()}

_SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
_SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}

_GA_TOP_KEYS = {
    "type", "model", "output_modalities", "instructions", "audio", "include", "tracing",
    "tools", "tool_choice", "max_output_tokens", "truncation", "prompt", "reasoning",
}
_BETA_TOP_KEYS = {
    "model", "modalities", "instructions", "voice", "input_audio_format", "output_audio_format",
    "input_audio_transcription", "turn_detection", "tools", "tool_choice", "temperature",
    "max_response_output_tokens", "input_audio_noise_reduction", "speed", "tracing", "include",
    "client_secret",
}
# Read-only fields a client may echo back from session.created; silently ignored.
_READ_ONLY_KEYS = {"id", "object", "expires_at"}


def bytes_per_ms(fmt: AudioFormat) -> int:
    """Wire bytes per millisecond of audio: G.711 is 8 kHz x 1 byte, PCM is 24 kHz x 2."""
    return 48 if fmt == "pcm" else 8


class SessionUpdateError(Exception):
    """A ``session.update`` the real API would refuse; becomes an ``error`` event."""

    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class SessionConfig:
    """The effective session, dialect-neutral."""

    id: str
    model: str
    expires_at: int = field(default_factory=lambda: int(time.time()) + 3600)
    instructions: str = DEFAULT_INSTRUCTIONS
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    input_format: AudioFormat = "pcm"
    output_format: AudioFormat = "pcm"
    voice: str = "alloy"
    speed: float = 1.0
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: dict(_SERVER_VAD_DEFAULTS)
    )
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8
    tracing: Any = None
    include: Any = None
    truncation: Any = "auto"
    prompt: Any = None

    @property
    def audio_output(self) -> bool:
        return "audio" in self.output_modalities


# ---------------------------------------------------------------- rendering


def _ga_format(fmt: AudioFormat) -> dict[str, Any]:
    if fmt == "pcm":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": f"audio/{fmt}"}


def render_session(cfg: SessionConfig, dialect: Dialect) -> dict[str, Any]:
    """The full session object as ``session.created``/``session.updated`` carry it."""
    td = copy.deepcopy(cfg.turn_detection)
    if dialect == "ga":
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": cfg.id,
            "model": cfg.model,
            "output_modalities": list(cfg.output_modalities),
            "instructions": cfg.instructions,
            "tools": copy.deepcopy(cfg.tools),
            "tool_choice": copy.deepcopy(cfg.tool_choice),
            "max_output_tokens": cfg.max_output_tokens,
            "tracing": copy.deepcopy(cfg.tracing),
            "truncation": copy.deepcopy(cfg.truncation),
            "prompt": copy.deepcopy(cfg.prompt),
            "expires_at": cfg.expires_at,
            "include": copy.deepcopy(cfg.include),
            "audio": {
                "input": {
                    "format": _ga_format(cfg.input_format),
                    "transcription": copy.deepcopy(cfg.transcription),
                    "noise_reduction": copy.deepcopy(cfg.noise_reduction),
                    "turn_detection": td,
                },
                "output": {
                    "format": _ga_format(cfg.output_format),
                    "voice": cfg.voice,
                    "speed": cfg.speed,
                },
            },
        }
    modalities = ["text"] if not cfg.audio_output else ["text", "audio"]
    return {
        "id": cfg.id,
        "object": "realtime.session",
        "model": cfg.model,
        "expires_at": cfg.expires_at,
        "modalities": modalities,
        "instructions": cfg.instructions,
        "voice": cfg.voice,
        "input_audio_format": _BETA_FORMAT_NAMES[cfg.input_format],
        "output_audio_format": _BETA_FORMAT_NAMES[cfg.output_format],
        "input_audio_transcription": copy.deepcopy(cfg.transcription),
        "input_audio_noise_reduction": copy.deepcopy(cfg.noise_reduction),
        "turn_detection": td,
        "tools": copy.deepcopy(cfg.tools),
        "tool_choice": copy.deepcopy(cfg.tool_choice),
        "temperature": cfg.temperature,
        "max_response_output_tokens": cfg.max_output_tokens,
        "speed": cfg.speed,
        "tracing": copy.deepcopy(cfg.tracing),
        "include": copy.deepcopy(cfg.include),
        "client_secret": None,
    }


# ---------------------------------------------------------------- updates


def _unknown(param: str) -> SessionUpdateError:
    return SessionUpdateError("unknown_parameter", f"Unknown parameter: '{param}'.", param)


def _invalid(param: str, value: Any, supported: str | None = None) -> SessionUpdateError:
    msg = f"Invalid value: '{value}'."
    if supported:
        msg += f" Supported values are: {supported}."
    return SessionUpdateError("invalid_value", msg, param)


def _missing(param: str) -> SessionUpdateError:
    return SessionUpdateError(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def _expect_obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SessionUpdateError(
            "invalid_type",
            f"Invalid type for '{param}': expected an object, but got {type(value).__name__}"
            " instead.",
            param,
        )
    return value


def _check_keys(obj: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed and key not in _READ_ONLY_KEYS:
            raise _unknown(f"{prefix}.{key}")


def _turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    """A replacement turn_detection (objects replace, missing fields take defaults)."""
    if value is None:
        return None
    td = _expect_obj(value, param)
    kind = td.get("type")
    if kind is None:
        raise _missing(f"{param}.type")
    if kind == "server_vad":
        base = dict(_SERVER_VAD_DEFAULTS)
    elif kind == "semantic_vad":
        base = dict(_SEMANTIC_VAD_DEFAULTS)
    else:
        raise _invalid(f"{param}.type", kind, "'server_vad' and 'semantic_vad'")
    for key, val in td.items():
        if key not in base:
            raise _unknown(f"{param}.{key}")
        base[key] = val
    if kind == "server_vad":
        thr = base["threshold"]
        if not isinstance(thr, int | float) or isinstance(thr, bool) or not 0.0 <= thr <= 1.0:
            raise _invalid(f"{param}.threshold", thr, "a number between 0 and 1")
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            v = base[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise _invalid(f"{param}.{key}", v)
    elif base["eagerness"] not in ("low", "medium", "high", "auto"):
        raise _invalid(f"{param}.eagerness", base["eagerness"],
                       "'low', 'medium', 'high', and 'auto'")
    return base


def _ga_format_in(value: Any, param: str) -> AudioFormat:
    fmt = _expect_obj(value, param)
    kind = fmt.get("type")
    if kind is None:
        raise _missing(f"{param}.type")
    if kind not in _GA_FORMATS:
        raise _invalid(f"{param}.type", kind, "'audio/pcm', 'audio/pcmu', and 'audio/pcma'")
    for key in fmt:
        if key not in ("type", "rate"):
            raise _unknown(f"{param}.{key}")
    if kind == "audio/pcm":
        rate = fmt.get("rate", 24000)
        if rate != 24000:
            raise _invalid(f"{param}.rate", rate, "24000")
    elif "rate" in fmt:
        raise _unknown(f"{param}.rate")
    return _GA_FORMATS[kind]


def _voice(value: Any, param: str, cfg: SessionConfig, voice_locked: bool) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(param, value)
    if voice_locked and value != cfg.voice:
        raise SessionUpdateError(
            "cannot_update_voice",
            "Cannot update a conversation's voice if assistant audio is present.",
            param,
        )
    return value


def _modalities_ga(value: Any) -> list[str]:
    if value not in (["audio"], ["text"]):
        raise _invalid(
            "session.output_modalities", value,
            "['audio'] or ['text'] (it is not possible to request both)",
        )
    return list(value)


def _modalities_beta(value: Any) -> list[str]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise _invalid("session.modalities", value, "'text' and 'audio'")
    return ["audio"] if "audio" in value else ["text"]


def _common(cfg: SessionConfig, s: dict[str, Any]) -> None:
    if "instructions" in s:
        if not isinstance(s["instructions"], str):
            raise _invalid("session.instructions", s["instructions"])
        cfg.instructions = s["instructions"]
    if "model" in s:
        cfg.model = str(s["model"])
    if "tools" in s:
        if not isinstance(s["tools"], list):
            raise _invalid("session.tools", s["tools"])
        cfg.tools = copy.deepcopy(s["tools"])
    if "tool_choice" in s:
        cfg.tool_choice = copy.deepcopy(s["tool_choice"])
    for key in ("tracing", "include"):
        if key in s:
            setattr(cfg, key, copy.deepcopy(s[key]))


def apply_update(
    cfg: SessionConfig, session: Any, dialect: Dialect, *, voice_locked: bool
) -> SessionConfig:
    """Validate a ``session.update`` payload and return the merged config.

    Partial-update semantics, as documented: only fields present are changed; nested
    ``audio.input``/``audio.output`` merge per field; a given ``turn_detection`` object
    replaces the previous one (omitted fields take their defaults), ``null`` disables it.
    The input ``cfg`` is not modified, so a rejected update leaves the session intact.
    """
    if session is None:
        raise _missing("session")
    s = _expect_obj(session, "session")
    new = copy.deepcopy(cfg)
    if dialect == "ga":
        if "type" not in s:
            raise _missing("session.type")
        if s["type"] != "realtime":
            raise _invalid("session.type", s["type"], "'realtime'")
        _check_keys(s, _GA_TOP_KEYS, "session")
        _common(new, s)
        if "output_modalities" in s:
            new.output_modalities = _modalities_ga(s["output_modalities"])
        if "max_output_tokens" in s:
            new.max_output_tokens = s["max_output_tokens"]
        for key in ("truncation", "prompt"):
            if key in s:
                setattr(new, key, copy.deepcopy(s[key]))
        if "audio" in s:
            audio = _expect_obj(s["audio"], "session.audio")
            _check_keys(audio, {"input", "output"}, "session.audio")
            if "input" in audio:
                inp = _expect_obj(audio["input"], "session.audio.input")
                _check_keys(
                    inp, {"format", "transcription", "noise_reduction", "turn_detection"},
                    "session.audio.input",
                )
                if "format" in inp:
                    new.input_format = _ga_format_in(inp["format"], "session.audio.input.format")
                if "transcription" in inp:
                    new.transcription = copy.deepcopy(inp["transcription"])
                if "noise_reduction" in inp:
                    new.noise_reduction = copy.deepcopy(inp["noise_reduction"])
                if "turn_detection" in inp:
                    new.turn_detection = _turn_detection(
                        inp["turn_detection"], "session.audio.input.turn_detection"
                    )
            if "output" in audio:
                out = _expect_obj(audio["output"], "session.audio.output")
                _check_keys(out, {"format", "voice", "speed"}, "session.audio.output")
                if "format" in out:
                    new.output_format = _ga_format_in(
                        out["format"], "session.audio.output.format"
                    )
                if "voice" in out:
                    new.voice = _voice(out["voice"], "session.audio.output.voice", cfg,
                                       voice_locked)
                if "speed" in out:
                    new.speed = float(out["speed"])
        return new

    _check_keys(s, _BETA_TOP_KEYS, "session")
    _common(new, s)
    if "modalities" in s:
        new.output_modalities = _modalities_beta(s["modalities"])
    for key, attr in (("input_audio_format", "input_format"),
                      ("output_audio_format", "output_format")):
        if key in s:
            if s[key] not in _BETA_FORMATS:
                raise _invalid(f"session.{key}", s[key], "'pcm16', 'g711_ulaw', and 'g711_alaw'")
            setattr(new, attr, _BETA_FORMATS[s[key]])
    if "voice" in s:
        new.voice = _voice(s["voice"], "session.voice", cfg, voice_locked)
    if "turn_detection" in s:
        new.turn_detection = _turn_detection(s["turn_detection"], "session.turn_detection")
    if "input_audio_transcription" in s:
        new.transcription = copy.deepcopy(s["input_audio_transcription"])
    if "input_audio_noise_reduction" in s:
        new.noise_reduction = copy.deepcopy(s["input_audio_noise_reduction"])
    if "temperature" in s:
        new.temperature = float(s["temperature"])
    if "max_response_output_tokens" in s:
        new.max_output_tokens = s["max_response_output_tokens"]
    if "speed" in s:
        new.speed = float(s["speed"])
    return new
