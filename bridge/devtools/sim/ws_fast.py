"""Cheaper message I/O on websockets' asyncio connections, for the simulators.

The load benchmark runs hundreds of simulated callers and the Realtime simulator in one
process on one core, so the library's per-message overhead is a large share of it.

Sending: profiles put the largest single share in ``Connection.send``: for every message
it enters an async context manager, checks the state and awaits a drain that, with a
nearly empty socket buffer, never waits. When none of that can matter (connection open,
no fragmented message in progress, little buffered), the library's own sans-I/O protocol
frames the message and ``send_data`` writes it (``send_now``): the same bytes on the
wire, in the same order, without the bookkeeping. Anything unusual is left to ``send()``.
The bridge has the same shortcut for its model socket (``bridge.realtime.connection``);
this copy keeps the simulators, which stand in for the remote ends, independent of the
code they test.

Receiving: every message ``recv()`` returns has been queued as frames, woken the reading
task and been reassembled. A connection subclass can instead take a whole message as its
frame is parsed (``process_event``), provided nothing received earlier is still queued or
half-assembled, so order holds; ``Arrivals`` keeps that account and ``message_of`` decodes
the frame as ``recv()`` would. Everything else still goes to ``recv()``, which keeps the
library's checks (invalid UTF-8 fails the connection with 1007, fragments, flow control).
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.connection import Connection
from websockets.frames import DATA_OPCODES, Frame, Opcode
from websockets.protocol import Event, State

__all__ = ["SEND_NOW_BUFFER_LIMIT", "Arrivals", "message_of", "send_now"]

SEND_NOW_BUFFER_LIMIT = 16 * 1024
"""Half of websockets' 32 KiB pause threshold: with this little buffered, a message of the
usual size cannot pause writing, so there is no drain to wait for. Above it (or while
writing is paused) ``send()`` applies backpressure."""


def send_now(connection: Connection, message: str | bytes) -> bool:
    """Write one message (str: text frame, bytes: binary frame, like ``send()``) if that
    is safe without awaiting; False means nothing was written and ``send()`` must be used.

    Data goes to the transport at once in both paths, so mixing them keeps message order.
    """
    if (
        connection.protocol.state is not State.OPEN
        or connection.send_in_progress is not None
        or connection.paused
        or connection.transport.get_write_buffer_size() > SEND_NOW_BUFFER_LIMIT
    ):
        return False
    if isinstance(message, str):
        connection.protocol.send_text(message.encode())
    else:
        connection.protocol.send_binary(message)
    connection.send_data()
    return True


class Arrivals:
    """Which data frames of one connection may be handled on arrival, without overtaking.

    Call ``ready`` for a data frame before handling it yourself and ``queued`` for every
    data frame passed on to the library.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._fragmented = False
        """A fragmented message has started reaching the queue and not ended yet."""

    def ready(self, frame: Frame) -> bool:
        """``frame`` is a whole message and nothing before it waits in the queue."""
        return (
            frame.fin
            and frame.opcode is not Opcode.CONT
            and not self._fragmented
            and not len(self._connection.recv_messages.frames)
        )

    def queued(self, frame: Frame) -> None:
        self._fragmented = not frame.fin

    def took(self, event: Event, take_now: Callable[[Frame], bool]) -> bool:
        """For a connection's ``process_event``: offer a data frame to ``take_now``.

        True means it was handled; False means pass ``event`` on to the library (and a
        data frame passed on is accounted for here)."""
        if not isinstance(event, Frame) or event.opcode not in DATA_OPCODES:
            return False
        if take_now(event):
            return True
        self.queued(event)
        return False


def message_of(frame: Frame) -> str | bytes | None:
    """The message of a whole text or binary frame as ``recv()`` returns it; None for text
    that is not valid UTF-8 (leave that to ``recv()``, which fails the connection)."""
    data = bytes(frame.data)
    if frame.opcode is Opcode.BINARY:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None
