"""The browser softphone as a caller leg.

The page speaks Twilio's Media Streams messages and honours Twilio's playback
contract (queued playback, marks echoed when reached, ``clear`` flushing pending
marks), so parsing and serialising are the Twilio leg's own.  What a phone never
gets, the page does: the live transcript and timeline, as extra ``transcript`` and
``observed`` frames written in order with the audio.
"""

from __future__ import annotations

from bridge.core.actions import Action, Observed, TranscriptLine
from bridge.operator.tap import observed_frame
from bridge.twilio.media import TwilioMediaProtocol


class SoftphoneProtocol(TwilioMediaProtocol):
    """Twilio's Media Streams on the wire, plus the page's extra frames."""

    name = "browser"

    def observe(self, action: Action) -> str | None:
        if isinstance(action, Observed | TranscriptLine):
            return observed_frame(action)
        return None
