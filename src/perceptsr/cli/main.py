"""The `perceptsr` command line: parse, run the command, and give every failure a user can cause one exit.

A `PerceptsrError`, an OSError (a full disk, a denied permission, a missing file: named), or running out of memory
ends as ONE line on stderr and exit code 2, never a traceback; Ctrl-C exits 130. Messages pass through
`messages.one_line`, so a file name holding a newline cannot make a message read as two. Anything else is a bug
and keeps its traceback. Outputs are checked before any work starts and written atomically, so a failed command
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Sequence

from perceptsr.cli.messages import PREFIX, one_line, setup_output
from perceptsr.cli.parser import build_parser
from perceptsr.errors import PerceptsrError

__all__ = ["build_parser", "main"]

# Commands that run models forward only: they get the inference allocator settings (inference/allocator.py).
INFERENCE_COMMANDS = frozenset({"upscale", "eval", "demo", "segment", "report", "sweep", "bench", "app"})
# Commands whose memory use the user can lower with --tile.
TILED_COMMANDS = frozenset({"upscale", "eval", "demo", "report", "sweep"})


def error_line(text: object) -> None:
    print(f"{PREFIX}: error: {one_line(text)}", file=sys.stderr)  # noqa: T201


def os_error_text(error: OSError, output: object = None) -> str:
    """`out/a.png: no space left on device`: the file and the system's reason. An error that names no file (a
    write to an open handle) names the command's output instead."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOSPC:
        reason = "no space left on device"
    names = [str(n) for n in (error.filename, error.filename2) if n is not None]
    if names:
        return f"{' -> '.join(names)}: {reason}"
    return f"{reason} (output: {output})" if output is not None else reason


def is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, or torch's allocator refusal (a RuntimeError / torch.OutOfMemoryError saying so)."""
    if isinstance(error, MemoryError):
        return True
    if not isinstance(error, RuntimeError):
        return False
    text = str(error)
    return type(error).__name__ == "OutOfMemoryError" or "can't allocate memory" in text or \
        "not enough memory" in text or "out of memory" in text.lower()


def memory_text(command: str, error: BaseException) -> str:
    detail = ""
    text = str(error)
    if "you tried to allocate" in text:
        size = text.split("you tried to allocate", 1)[1].split()[0]
        detail = f" (tried to allocate {int(size) / 1e9:.1f} GB)" if size.isdigit() else ""
    hint = "; try a smaller --tile, fewer or smaller images, or free memory" if command in TILED_COMMANDS else \
        "; free memory or use smaller inputs"
    return f"not enough memory for `{PREFIX} {command}`{detail}{hint}"


def quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again on the closed pipe."""
    with contextlib.suppress(OSError, ValueError):  # no real file descriptor (captured output): nothing to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    setup_output()
    command, kwargs = "?", {}
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        if command in INFERENCE_COMMANDS:
            from perceptsr.inference import allocator

            allocator.configure()
        function, kwargs = args.bind(args)
        return function(**kwargs)
    except PerceptsrError as error:
        error_line(error)
    except KeyboardInterrupt:
        print(f"{PREFIX}: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except BrokenPipeError:  # the reader of our output went away (`perceptsr models | head`): nothing to say
        quiet_stdout()
        return 1
    except OSError as error:
        error_line(os_error_text(error, kwargs.get("output")))
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        error_line(memory_text(command, error))
    return 2
