"""The one exception type users see as a one-line ``error: ...`` message (no traceback)."""


class LayerpruneError(Exception):
    """A problem with the user's input or environment that a message can explain."""
