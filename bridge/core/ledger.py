"""The playback ledger: what the caller has really heard.

Audio sent to Twilio is not audio played.  Twilio buffers whatever we send and
the model produces speech faster than real time, so at any instant most of an
agent reply may still sit in Twilio's buffer.  The only reliable signal of
playback is the ``mark`` echo: Twilio returns a mark when the audio queued
before it has played.

So every outbound chunk is followed by a mark, and the ledger remembers, per
mark, which item it closes and at which offset of that item's audio.  An echo
moves that item's *heard* position forward.  A ``clear`` starts a new
*generation*: Twilio flushes the pending marks back at once, and those echoes
mean "discarded", not "played", so marks of an old generation are ignored.

Offsets are kept in model-side samples (8 kHz for ``audio/pcmu``, 24 kHz for
``audio/pcm``) so ``conversation.item.truncate`` gets exactly the model's own
timeline, with no rounding drift accumulated over many chunks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum


@dataclass(slots=True)
class ItemPlayback:
    """Playback accounting for one assistant audio item."""

    item_id: str
    response_id: str
    sent: int = 0  # samples forwarded to Twilio (model timeline)
    heard: int = 0  # samples confirmed played by a mark echo
    audio_done: bool = False  # the model finished this item's audio
    first_sent_at: int | None = None  # call clock (ms) of the first forwarded chunk
    truncated: bool = False

    @property
    def finished_playing(self) -> bool:
        return self.audio_done and self.heard >= self.sent


@dataclass(frozen=True, slots=True)
class PendingMark:
    name: str
    item_id: str
    end: int  # item offset (samples) reached when this mark echoes


class MarkOutcome(Enum):
    PLAYED = "played"  # advanced an item's heard position
    STALE = "stale"  # from before a clear: the audio was discarded, not played
    UNKNOWN = "unknown"  # not a mark of ours (or a duplicate echo)


class PlaybackLedger:
    """Tracks sent vs heard audio per item through generation-tagged marks."""

    def __init__(self, samples_per_ms: int) -> None:
        self.samples_per_ms = samples_per_ms
        self.generation = 0
        self._seq = 0
        self._pending: deque[PendingMark] = deque()
        self.items: dict[str, ItemPlayback] = {}

    # -- sending -------------------------------------------------------------

    def item(self, item_id: str, response_id: str) -> ItemPlayback:
        playback = self.items.get(item_id)
        if playback is None:
            playback = self.items[item_id] = ItemPlayback(item_id, response_id)
        return playback

    def record_chunk(self, item_id: str, response_id: str, samples: int, now: int) -> str:
        """Account for ``samples`` of ``item_id`` sent to Twilio; return the mark name to send."""
        playback = self.item(item_id, response_id)
        if playback.first_sent_at is None:
            playback.first_sent_at = now
        playback.sent += samples
        self._seq += 1
        end_ms = playback.sent // self.samples_per_ms
        name = f"g{self.generation}.{self._seq}:{item_id}:{end_ms}"
        self._pending.append(PendingMark(name, item_id, playback.sent))
        return name

    # -- receiving -----------------------------------------------------------

    def on_mark(self, name: str) -> MarkOutcome:
        """Apply a mark echo.  Twilio echoes in order, so earlier marks are implied played."""
        if not name.startswith(f"g{self.generation}."):
            return (
                MarkOutcome.STALE if name.startswith("g") and "." in name else MarkOutcome.UNKNOWN
            )
        for index, pending in enumerate(self._pending):
            if pending.name == name:
                for _ in range(index + 1):
                    done = self._pending.popleft()
                    playback = self.items.get(done.item_id)
                    if playback is not None and done.end > playback.heard:
                        playback.heard = done.end
                return MarkOutcome.PLAYED
        return MarkOutcome.UNKNOWN

    @property
    def outstanding(self) -> bool:
        """True while Twilio still holds audio we sent (marks not yet echoed)."""
        return bool(self._pending)

    def clear(self) -> None:
        """Twilio's buffer is being emptied: forget pending marks, start a new generation."""
        self._pending.clear()
        self.generation += 1

    def heard_ms(self, playback: ItemPlayback) -> int:
        """Milliseconds of ``playback`` the caller heard, clamped to what was sent."""
        return min(playback.heard, playback.sent) // self.samples_per_ms

    def sent_ms(self, playback: ItemPlayback) -> int:
        return playback.sent // self.samples_per_ms

    def unsettled(self) -> list[ItemPlayback]:
        """Items that started playing and are not finished: the barge-in candidates."""
        return [
            p
            for p in self.items.values()
            if p.sent > 0 and not p.truncated and not p.finished_playing
        ]

    def forget(self, item_id: str) -> None:
        self.items.pop(item_id, None)
