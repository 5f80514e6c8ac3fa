"""Assembling the call's transcript: what the caller said, what the caller heard.

An agent line is settled only once the caller has heard the item (its last mark
echoed) or was interrupted in it, and then holds only the words that were
heard: the call record must say what the person on the phone experienced, not
what the model generated.  Caller lines take their timing from the backend's
speech start/stop.  Every line gets the call's next sequence number, so records
written by several processes (or replayed) keep their order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bridge.core.actions import TranscriptLine
from bridge.core.ledger import ItemPlayback, PlaybackLedger


@dataclass(slots=True)
class AgentText:
    """Transcript text of an agent item, kept until the caller has heard it (or not)."""

    text: str = ""
    done: bool = False
    content_index: int = 0


def heard_words(text: str, heard_ms: int, sent_ms: int) -> str:
    """The share of ``text`` the caller heard, by words, proportional to time."""
    words = text.split()
    keep = round(len(words) * min(1.0, heard_ms / max(1, sent_ms)))
    return " ".join(words[:keep])


class Transcript:
    """Agent item texts, caller speech timings, and the line numbering."""

    def __init__(self) -> None:
        self.agent: dict[str, AgentText] = {}
        self.speech: dict[str, list[int]] = {}  # caller item -> [start_ms, end_ms]
        self.dropped: set[str] = set()  # agent items cut by a barge-in: later text ignored
        self.truncated: dict[str, int] = {}  # item cut by a truncate -> its line's index
        self.lines = 0
        self.history: list[TranscriptLine] = []

    def _line(
        self,
        speaker: str,
        text: str,
        start_ms: int,
        end_ms: int,
        interrupted: bool = False,
        item_id: str | None = None,
    ) -> TranscriptLine:
        self.lines += 1
        line = TranscriptLine(
            speaker, text, start_ms, end_ms, interrupted, item_id, self.lines  # type: ignore[arg-type]
        )
        self.history.append(line)
        return line

    # -- agent ------------------------------------------------------------

    def agent_item(self, item_id: str) -> AgentText:
        item = self.agent.get(item_id)
        if item is None:
            item = self.agent[item_id] = AgentText()
        return item

    def agent_delta(self, item_id: str, delta: str) -> None:
        if item_id not in self.dropped:
            self.agent_item(item_id).text += delta

    def agent_done(self, item_id: str, text: str | None) -> None:
        if item_id in self.dropped:
            return
        item = self.agent_item(item_id)
        if text is not None:
            item.text = text
        item.done = True

    def agent_line(
        self, ledger: PlaybackLedger, playback: ItemPlayback, start_ms: int, interrupted: bool
    ) -> TranscriptLine:
        """Settle ``playback`` into a line of what was heard, and forget the item."""
        item = self.agent.pop(playback.item_id, None) or AgentText()
        heard_ms = ledger.heard_ms(playback)
        text = item.text.strip()
        if interrupted:
            text = heard_words(text, heard_ms, ledger.sent_ms(playback))
        ledger.forget(playback.item_id)
        return self._line(
            "agent", text, start_ms, start_ms + heard_ms, interrupted, playback.item_id
        )

    def truncated_line(
        self, ledger: PlaybackLedger, playback: ItemPlayback, start_ms: int
    ) -> TranscriptLine:
        """The interrupted line of an item the model is told to truncate: kept findable,
        since the backend may answer with the text it really kept (``heard_as``)."""
        line = self.agent_line(ledger, playback, start_ms, interrupted=True)
        self.truncated[playback.item_id] = len(self.history) - 1
        return line

    def heard_as(self, item_id: str, text: str | None) -> TranscriptLine | None:
        """Restate a truncated item's line with the backend's heard text.

        The line keeps its ``seq`` (the store upserts by it, the console replaces the
        line), so the record says what the model's history says; None when there is
        no such line, the backend sent no text (its answer still ends the wait), or
        its text already agrees."""
        index = self.truncated.pop(item_id, None)
        if index is None or text is None:
            return None
        line = self.history[index]
        text = text.strip()
        if text == line.text:
            return None
        line = self.history[index] = replace(line, text=text)
        return line

    def confirmed_lines(self) -> int:
        """How many lines, from the start, no backend answer can still restate: a new
        session seeded with more could keep an estimate the old one then corrects."""
        return min(self.truncated.values(), default=len(self.history))

    def stop_awaiting_truncations(self) -> None:
        """The session that was asked to truncate is gone; its answers will not come."""
        self.truncated.clear()

    def settled(
        self, ledger: PlaybackLedger, start_of: Callable[[ItemPlayback], int]
    ) -> list[TranscriptLine]:
        """Lines for every agent item the caller has now heard in full."""
        lines: list[TranscriptLine] = []
        for playback in list(ledger.items.values()):
            if playback.truncated or not playback.finished_playing:
                continue
            item = self.agent.get(playback.item_id)
            if item is not None and not item.done:
                continue
            lines.append(self.agent_line(ledger, playback, start_of(playback), False))
        return lines

    # -- caller -----------------------------------------------------------

    def speech_started(self, item_id: str | None, at_ms: int) -> None:
        if item_id is not None:
            self.speech[item_id] = [at_ms, -1]

    def speech_stopped(self, item_id: str | None, at_ms: int) -> None:
        if item_id is not None and item_id in self.speech:
            self.speech[item_id][1] = at_ms

    def caller_line(self, item_id: str | None, text: str, now_ms: int) -> TranscriptLine:
        start, end = self.speech.pop(str(item_id), [-1, -1])
        start = start if start >= 0 else now_ms
        end = end if end >= 0 else max(start, now_ms)
        return self._line("caller", text.strip(), start, end, item_id=item_id)

    def system_line(self, text: str, at_ms: int) -> TranscriptLine:
        return self._line("system", text, at_ms, at_ms)
