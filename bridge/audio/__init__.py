"""Audio for the ``pcm16`` path: mu-law codec, streaming x3 resamplers, per-call transcoder."""

from bridge.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from bridge.audio.resampler import Downsampler, Upsampler
from bridge.audio.transcoder import Pcm16Transcoder

__all__ = ["Downsampler", "Pcm16Transcoder", "Upsampler", "pcm16_to_ulaw", "ulaw_to_pcm16"]
