"""Key presses: told to the model as they happen, answered when the entry is complete.

A caller typing an account number expects the agent to react to the whole
number, but the model should know about each key within a few hundred
milliseconds, not only after a pause (it may be speaking, and a key press is
a reason to stop and listen).  So every digit becomes a user text item at once,
and a response is asked for when the entry looks complete: ``#``, a pause, or
the number of digits the agent profile expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def digit_text(digit: str) -> str:
    return f"[The caller pressed {digit} on their phone keypad]"


@dataclass(slots=True)
class Keypad:
    """The digits of the entry in progress."""

    expected_length: int | None = None
    digits: list[str] = field(default_factory=list)

    def press(self, digit: str) -> bool:
        """Add a digit; True when the entry is complete."""
        self.digits.append(digit)
        if digit == "#":
            return True
        length = self.expected_length
        return length is not None and len([d for d in self.digits if d != "#"]) >= length

    def take(self) -> str:
        """The finished entry (and start a new one)."""
        entry = "".join(self.digits)
        self.digits.clear()
        return entry

    def __bool__(self) -> bool:
        return bool(self.digits)
