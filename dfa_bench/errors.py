"""Errors that end a run with one clear message (no traceback): bad input, not bugs."""


class UserError(Exception):
    """Something the user can fix: a config value, a data file, a run directory."""


class DataError(UserError):
    """A dataset is missing, incomplete or unreadable."""


class ConfigError(UserError):
    """A config value is invalid or does not fit the rest of the config."""


class RunDirError(UserError):
    """The run directory already holds a finished run that must not be overwritten."""
