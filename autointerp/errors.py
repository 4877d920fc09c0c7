"""User-facing errors: one line, no traceback (the CLI prints them; `--debug` shows the trace)."""


class AutointerpError(Exception):
    """A failure the user can act on. Its message is the whole story, in one line."""


class BadInputError(AutointerpError):
    """A file, option or endpoint the user pointed us at is wrong."""
