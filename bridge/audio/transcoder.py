"""Per-call transcoding for ``BRIDGE_AUDIO=pcm16``: Twilio mu-law 8 kHz <-> PCM16LE 24 kHz."""

from __future__ import annotations

from bridge.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from bridge.audio.resampler import Downsampler, Upsampler

__all__ = ["Pcm16Transcoder"]


class Pcm16Transcoder:
    """Both audio directions of one call, each with its own resampler state.

    One instance per call, because the resamplers carry filter history (and any partial
    input) between frames: sharing one across calls, or across directions, would splice
    unrelated audio together. Output length follows input length exactly: a 20 ms Twilio
    frame (160 bytes) gives 960 bytes to the model, and 960 bytes from the model give
    160 bytes for Twilio, each delayed by about 3 ms of filter group delay.
    """

    def __init__(self) -> None:
        self._up = Upsampler()
        self._down = Downsampler()

    def to_model(self, ulaw: bytes) -> bytes:
        """Caller audio: mu-law 8 kHz -> PCM16LE 24 kHz."""
        return self._up.process(ulaw_to_pcm16(ulaw))

    def to_twilio(self, pcm24: bytes) -> bytes:
        """Model audio: PCM16LE 24 kHz -> mu-law 8 kHz.

        Any byte count is accepted; a dangling odd byte, and up to two samples that do not
        yet make a whole 8 kHz sample, are carried into the next call.
        """
        return pcm16_to_ulaw(self._down.process(pcm24))

    def reset_to_twilio(self) -> None:
        """Drop model audio still inside the downsampler (about 3 ms plus carried input).

        Call it when Twilio playback is cleared (barge-in): otherwise the tail of the
        interrupted response would be emitted at the start of the next one.
        """
        self._down.reset()

    def reset_to_model(self) -> None:
        """Drop caller-side audio still inside the upsampler.

        For a leg whose *caller* speaks PCM16 24 kHz (the softphone page), where this
        direction is the one feeding playback: a cleared playback must not start the
        next reply with the interrupted one's filter tail."""
        self._up.reset()

    def flush_to_twilio(self) -> bytes:
        """The model audio still inside the downsampler, pushed out with silence.

        Called when an agent item's audio is complete, so its last ~3 ms go out before
        the item's final mark: that mark then really means "the whole item played".
        """
        samples = -(-int(self._down.delay_ms * 24 + 1) // 3) * 3  # whole 8 kHz samples
        return self.to_twilio(bytes(2 * samples))
