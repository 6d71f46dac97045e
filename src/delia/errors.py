"""Exception types that are the user's to fix: the CLI prints them as one clear message, no traceback.

`UserError` is a marker base: each stage's error (ConfigError, DataError, BuildError, ...) derives from it and
from the built-in it always was (ValueError, RuntimeError, KeyError), so `except ValueError` still catches it.
This module imports nothing from delia, so every layer can mark its errors without importing the stages.
"""


class UserError(Exception):
    """Base of the errors whose message is the whole explanation for the user (printed without a traceback)."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)
