"""One message, one line: what the command line prints for errors and warnings.

A message built from a file name can hold a newline or a terminal escape (a name is any bytes but `/` and NUL);
printed raw, its second line could read like success. Every message leaves through `one_line`, which escapes
control characters the way Python writes them in strings (`\\n`, `\\x1b`), so the user sees the real name.
"""

from __future__ import annotations

import logging
import sys
import warnings

PREFIX = "perceptsr"


def one_line(text: object) -> str:
    """`text` with every control character escaped (`\\n`, `\\r`, `\\t`, `\\x1b`, ...); printable text unchanged."""
    out = []
    for char in str(text):
        if char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(repr(char)[1:-1] if char not in "'\"" else char)
    return "".join(out)


def note(text: object) -> None:
    """A status line for the user on stderr (`wrote ...`), escaped to one line."""
    print(one_line(text), file=sys.stderr)  # noqa: T201


class OneLineFormatter(logging.Formatter):
    """`perceptsr: message` on one line; a traceback attached to a record is dropped (a user-facing log)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{PREFIX}: {one_line(record.getMessage())}"


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: object = None, line: str | None = None) -> None:
    """`warnings.showwarning` without the source echo: `perceptsr: warning: message`, one line."""
    print(f"{PREFIX}: warning: {one_line(message)}", file=sys.stderr)  # noqa: T201


class StderrHandler(logging.StreamHandler):
    """Writes to the current `sys.stderr` (looked up per record, so a replaced stderr is honoured)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter())

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_output() -> None:
    """Route log records and warnings through the one-line formats (a no-op for logging already configured)."""
    logging.basicConfig(level=logging.WARNING, handlers=[StderrHandler()])
    warnings.showwarning = show_warning
