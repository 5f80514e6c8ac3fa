"""Writing a WebSocket message without the per-message await, for the simulators.

The load benchmark runs hundreds of simulated callers and the Realtime simulator in one
process on one core, and profiles put the largest single share of that process in
websockets' ``Connection.send``: for every message it enters an async context manager,
checks the state and awaits a drain that, with a nearly empty socket buffer, never
waits. When none of that can matter (connection open, no fragmented message in progress,
little buffered), the library's own sans-I/O protocol frames the message and
``send_data`` writes it: the same bytes on the wire, in the same order, without the
bookkeeping. Anything unusual (closing, a backed-up buffer) is left to ``send()``.

The bridge has the same shortcut for its model socket (``bridge.realtime.connection``);
this copy keeps the simulators, which stand in for the remote ends, independent of the
code they test.
"""

from __future__ import annotations

from websockets.asyncio.connection import Connection
from websockets.protocol import State

__all__ = ["SEND_NOW_BUFFER_LIMIT", "send_now"]

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
