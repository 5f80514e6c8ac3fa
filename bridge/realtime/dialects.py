"""The three ways to speak to a Realtime server, as data.

GA, beta and Azure differ only in the URL, the auth header, the shape of
``session.update`` and a handful of server event names.  Keeping those
differences in one table lets the call core speak a single vocabulary (GA
names) whatever the server: incoming beta events are renamed on arrival, and
the events the core sends (``input_audio_buffer.append``,
``conversation.item.truncate``, ``response.create``...) are identical on the
wire in every dialect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.config import AgentConfig, AudioMode, Dialect, TurnDetection

#: Beta server event names -> the GA names the core understands.
BETA_TO_GA: dict[str, str] = {
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "conversation.item.created": "conversation.item.added",
}

#: Format names per dialect family for each bridge audio mode.
GA_FORMATS: dict[str, dict[str, Any]] = {
    "passthrough": {"type": "audio/pcmu"},
    "pcm16": {"type": "audio/pcm", "rate": 24000},
}
BETA_FORMATS: dict[str, str] = {"passthrough": "g711_ulaw", "pcm16": "pcm16"}

@dataclass(frozen=True)
class DialectSpec:
    """How one dialect connects and shapes its session."""

    name: Dialect
    beta_shape: bool

    def connect_url(self, base_url: str, model: str) -> str:
        """``base_url`` with ``?model=`` added unless the URL already names one."""
        parts = urlsplit(base_url)
        query = dict(parse_qsl(parts.query))
        if "model" not in query and "deployment" not in query:
            query["model"] = model
        return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))

    def headers(self, api_key: str) -> dict[str, str]:
        headers = (
            {"api-key": api_key} if self.name == "azure" else {"Authorization": f"Bearer {api_key}"}
        )
        if self.beta_shape and self.name != "azure":
            headers["OpenAI-Beta"] = "realtime=v1"
        return headers

    @property
    def assistant_text_type(self) -> str:
        """Content type of assistant text in ``conversation.item.create``."""
        return "text" if self.beta_shape else "output_text"

    def rename(self, event_type: str) -> str:
        return BETA_TO_GA.get(event_type, event_type) if self.beta_shape else event_type

    def session_update(
        self,
        agent: AgentConfig,
        audio_mode: AudioMode,
        model: str,
        tools: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The ``session.update`` event in this dialect's shape."""
        if self.beta_shape:
            session = self._beta_session(agent, audio_mode, tools)
        else:
            session = self._ga_session(agent, audio_mode, model, tools)
        return {"type": "session.update", "event_id": "bridge_session_update", "session": session}

    def _ga_session(
        self, agent: AgentConfig, audio_mode: AudioMode, model: str, tools: list[dict[str, Any]]
    ) -> dict[str, Any]:
        audio_input: dict[str, Any] = {
            "format": GA_FORMATS[audio_mode],
            "turn_detection": turn_detection_payload(agent.turn_detection),
        }
        if agent.transcription_model:
            audio_input["transcription"] = {"model": agent.transcription_model}
        session: dict[str, Any] = {
            "type": "realtime",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": agent.instructions,
            "audio": {
                "input": audio_input,
                "output": {"format": GA_FORMATS[audio_mode], "voice": agent.voice},
            },
        }
        if tools:
            session["tools"] = tools
            session["tool_choice"] = "auto"
        return session

    def _beta_session(
        self, agent: AgentConfig, audio_mode: AudioMode, tools: list[dict[str, Any]]
    ) -> dict[str, Any]:
        session: dict[str, Any] = {
            "modalities": ["text", "audio"],
            "instructions": agent.instructions,
            "voice": agent.voice,
            "input_audio_format": BETA_FORMATS[audio_mode],
            "output_audio_format": BETA_FORMATS[audio_mode],
            "turn_detection": turn_detection_payload(agent.turn_detection),
        }
        if agent.transcription_model:
            session["input_audio_transcription"] = {"model": agent.transcription_model}
        if tools:
            session["tools"] = tools
            session["tool_choice"] = "auto"
        return session

    def confirmed_formats(self, session: dict[str, Any]) -> tuple[Any, Any]:
        """(input, output) audio formats as the server reports them in ``session.updated``."""
        if self.beta_shape:
            return session.get("input_audio_format"), session.get("output_audio_format")
        audio = session.get("audio") or {}
        fmt_in = ((audio.get("input") or {}).get("format") or {}).get("type")
        fmt_out = ((audio.get("output") or {}).get("format") or {}).get("type")
        return fmt_in, fmt_out

    def expected_formats(self, audio_mode: AudioMode) -> tuple[Any, Any]:
        if self.beta_shape:
            return BETA_FORMATS[audio_mode], BETA_FORMATS[audio_mode]
        return GA_FORMATS[audio_mode]["type"], GA_FORMATS[audio_mode]["type"]


def turn_detection_payload(td: TurnDetection) -> dict[str, Any] | None:
    """The ``turn_detection`` object, with both response flags set explicitly.

    The current API reference states no default for ``create_response`` and
    ``interrupt_response``, so the bridge never relies on one: its barge-in logic
    depends on knowing whether the server cancels responses by itself.
    """
    if td.type == "none":
        return None
    payload: dict[str, Any] = {
        "type": td.type,
        "create_response": td.create_response,
        "interrupt_response": td.interrupt_response,
    }
    if td.type == "server_vad":
        payload.update(
            threshold=td.threshold,
            prefix_padding_ms=td.prefix_padding_ms,
            silence_duration_ms=td.silence_duration_ms,
        )
    else:
        payload["eagerness"] = td.eagerness
    return payload


def dialect_for(name: Dialect, realtime_url: str = "") -> DialectSpec:
    """The spec for ``name``.  Azure's legacy preview URL (``api-version=``) is beta-shaped."""
    if name == "ga":
        return DialectSpec("ga", beta_shape=False)
    if name == "beta":
        return DialectSpec("beta", beta_shape=True)
    legacy = "api-version=" in urlsplit(realtime_url).query
    return DialectSpec("azure", beta_shape=legacy)
