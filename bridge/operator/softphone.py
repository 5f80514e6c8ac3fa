"""The browser softphone as a caller leg.

The page speaks Twilio's Media Streams messages and honours Twilio's playback
contract (queued playback, marks echoed when reached, ``clear`` flushing pending
marks), so parsing and serialising are the Twilio leg's own.  What a phone never
gets, the page does: the live transcript and timeline, as extra ``transcript`` and
``observed`` frames written in order with the audio.

**Encoding negotiation.**  The page offers the encodings it can speak as WebSocket
subprotocols (``softphone.pcm16``, ``softphone.mulaw``); the server picks one with
:func:`choose_encoding` and the browser learns the pick from ``WebSocket.protocol``
before it sends ``start``.  A subprotocol rather than a field of ``start``: the choice
is made, and visible to both ends, in the handshake itself, so no audio is ever sent in
a format the other side has not agreed to, and a page offering nothing we speak is
refused before the socket opens.  The bridge's setting ``BRIDGE_SOFTPHONE_AUDIO``
decides when the page offers both: one deployment-wide choice, known before the
``start`` message names an agent profile.

**PCM16 on this leg** is PCM16LE mono at 24 kHz (the page runs its AudioContext at that
rate).  The call core's caller side is μ-law 8 kHz (its ledger, tones, prompts and the
recordings count μ-law samples), so the leg transcodes at its own boundary with the
project's streaming resampler (:mod:`bridge.audio.resampler`): page audio is decimated
to 8 kHz and μ-law encoded before the core sees it; agent audio is decoded and
interpolated to 24 kHz just before it is written.  Every 20 ms chunk maps to exactly
three times its samples, so marks land where they would in μ-law, and a ``clear``
resets the interpolator so an interrupted reply's filter tail cannot leak into the next.
"""

from __future__ import annotations

import json
from base64 import b64decode, b64encode
from typing import Any, Literal

from bridge.audio.transcoder import Pcm16Transcoder
from bridge.core import events as ev
from bridge.core.actions import Action, ClearPlayback, Observed, PlayAudio, ToCaller, TranscriptLine
from bridge.jsoncodec import JsonLoads
from bridge.operator.tap import observed_frame
from bridge.twilio.media import TwilioMediaProtocol

__all__ = ["ENCODINGS", "SoftphoneProtocol", "choose_encoding"]

Encoding = Literal["mulaw", "pcm16"]

#: Per encoding: the subprotocol the page offers, and the ``start.mediaFormat`` it sends.
ENCODINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "mulaw": ("softphone.mulaw", {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}),
    "pcm16": ("softphone.pcm16", {"encoding": "audio/pcm", "sampleRate": 24000, "channels": 1}),
}
_BY_SUBPROTOCOL = {sub: name for name, (sub, _) in ENCODINGS.items()}
_CORE_FORMAT = ENCODINGS["mulaw"][1]


def choose_encoding(offered: list[str], preferred: str) -> tuple[Encoding, str | None] | None:
    """The encoding for a socket that offered ``offered`` subprotocols, and the
    subprotocol to accept it with; None when the page offers nothing we speak.

    A client offering no subprotocol at all (a page from before negotiation, a script)
    gets μ-law, Twilio's format, with no subprotocol in the answer."""
    if not offered:
        return "mulaw", None
    ours = [_BY_SUBPROTOCOL[sub] for sub in offered if sub in _BY_SUBPROTOCOL]
    if not ours:
        return None
    pick = preferred if preferred in ours else ours[0]
    return pick, ENCODINGS[pick][0]  # type: ignore[return-value]


class SoftphoneProtocol(TwilioMediaProtocol):
    """Twilio's Media Streams on the wire, plus the page's extra frames."""

    name = "browser"

    def __init__(self, loads: JsonLoads = json.loads, encoding: Encoding = "mulaw") -> None:
        self.encoding = encoding
        # The page speaks what the model speaks in pcm16 mode (PCM16LE 24 kHz), so the
        # call transcoder serves: ``to_twilio`` brings page audio to the core's μ-law,
        # ``to_model`` takes agent audio up to the page's rate.
        self._page = Pcm16Transcoder() if encoding == "pcm16" else None
        self._page_loads = loads
        self._refusal: ev.ProtocolProblem | None = None
        super().__init__(loads if self._page is None else self._to_core)

    def _to_core(self, frame: str | bytes) -> Any:
        """Parse a PCM16 page frame into the message the Twilio parser expects: the
        negotiated media format stated as the core's, audio transcoded to μ-law."""
        message = self._page_loads(frame)
        if not isinstance(message, dict):
            return message
        kind = message.get("event")
        if kind == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if isinstance(payload, str):
                try:
                    pcm = b64decode(payload, validate=True)
                except ValueError:
                    return message  # the Twilio parser reports the bad base64
                assert self._page is not None
                media["payload"] = b64encode(self._page.to_twilio(pcm)).decode("ascii")  # type: ignore[index]
        elif kind == "start":
            start = message.get("start")
            if isinstance(start, dict):
                offered = start.get("mediaFormat")
                if offered != ENCODINGS["pcm16"][1] and not (
                    isinstance(offered, dict)
                    and offered.get("encoding") == "audio/pcm"
                    and str(offered.get("sampleRate")) == "24000"
                ):
                    self._refusal = ev.ProtocolProblem(
                        "caller", "bad_start",
                        "'start' media format differs from the negotiated audio/pcm at 24000 Hz",
                    )
                else:
                    start["mediaFormat"] = dict(_CORE_FORMAT)
        return message

    def parse(self, frame: str | bytes) -> ev.CallerEvent | ev.ProtocolProblem:
        parsed = super().parse(frame)
        if self._refusal is not None:
            parsed, self._refusal = self._refusal, None
        return parsed

    def serialise(self, action: ToCaller) -> str:
        if self._page is not None:
            if type(action) is PlayAudio:
                pcm = self._page.to_model(b64decode(action.payload))
                action = PlayAudio(b64encode(pcm).decode("ascii"))
            elif type(action) is ClearPlayback:
                self._page.reset_to_model()
        return super().serialise(action)

    def observe(self, action: Action) -> str | None:
        if isinstance(action, Observed | TranscriptLine):
            return observed_frame(action)
        return None
