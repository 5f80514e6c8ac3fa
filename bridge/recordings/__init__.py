"""Two-channel call recordings: the caller, and exactly what the caller heard."""
