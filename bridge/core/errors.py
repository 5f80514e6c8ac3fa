"""The one exception the core raises: the driver used it wrongly.

Garbage from a peer is never an exception (see ``ProtocolProblem``); this is
for bugs in our own drivers, which must be loud rather than survived.
"""


class DriverError(RuntimeError):
    """An event the core cannot accept in any state (not a peer's fault)."""
