"""The live driver of calls: runs one ``CallSession`` per call between a caller leg
and a model backend, over real sockets and a real clock."""
