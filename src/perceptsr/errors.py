"""Errors a user can cause. The CLI prints their message as one line and exits 2.

Everything else (a bug) keeps its traceback: only these are the user's fault.
"""


class PerceptsrError(Exception):
    """Base of every error caused by the user's input, files or configuration."""


class InputError(PerceptsrError):
    """An image, path, size, scale or condition map that cannot be used."""


class ConfigError(PerceptsrError):
    """A configuration file or --set override that does not fit the schema."""


class CheckpointError(PerceptsrError):
    """A checkpoint or release file that is corrupt, foreign or incompatible."""
