"""The ``clemalign`` command group, its shared options and consoles, and ``main``.

Errors in the input (files, flags, image content) print one line on stderr and exit
with status 2; ``--debug`` shows the traceback instead.  Library errors name Python
parameters; :func:`main` names the flags that set them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
from rich.console import Console

from ..errors import InputError

__all__ = ["app", "main", "out", "err", "voxel_size_option", "markup_safe", "POSITIVE",
           "FINITE", "SEED"]

# no markup unless a call asks for it: file names and channel names may hold "[...]"
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class _Finite(click.ParamType):
    """A finite number (NaN and infinity refused: click's ranges let NaN through)."""

    name = "float"

    def __init__(self, positive: bool) -> None:
        self.positive = positive

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or (self.positive and number <= 0):
            self.fail(f"{value!r}: expected a finite{' positive' if self.positive else ''} "
                      "number", param, ctx)
        return number


POSITIVE = _Finite(positive=True)
FINITE = _Finite(positive=False)
SEED = click.IntRange(0, 2**32 - 1)  # numpy's seed range


def voxel_size_option(name: str, help_text: str):
    """A ``Z Y X`` voxel-size option in µm (``Y X`` for a 2D image: see
    :func:`_two_number_sizes`)."""
    return click.option(name, type=(float, float, float), default=None, metavar="Z Y X",
                        help=help_text + " Y X (two numbers) for a 2D image.")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _two_number_sizes(args: list[str]) -> list[str]:
    """``--*voxel-size Y X`` (a 2D image's pixel) as ``nan Y X``: click options take a
    fixed number of values; the reader then takes the x pixel as the plane's thickness,
    or refuses the pair for a stack."""
    out: list[str] = []
    i = 0
    while i < len(args):
        out.append(args[i])
        if args[i].endswith("voxel-size") and args[i].startswith("--"):
            values = args[i + 1:i + 4]
            n = next((k for k, t in enumerate(values) if not _is_number(t)), len(values))
            if n == 2:
                out.append("nan")
        i += 1
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="clemalign")
def app(debug: bool) -> None:
    """Automatic overlay of 3D correlative light and electron microscopy stacks."""


_FLAGS = {"roi": "--roi", "em_slices": "--em-slices", "max_rotation_deg": "--max-rotation-deg",
          "model": "--model", "lm_channel": "--lm-channel", "em_polarity": "--em-polarity",
          "lm_polarity": "--lm-polarity", "prealign_mode": "--prealign", "scale": "--scale",
          "rotation_deg": "--rotation-deg"}


def _as_flags(message: str) -> str:
    """An error message that starts with a parameter name, with the flag named instead."""
    name, sep, rest = message.partition(":")
    return f"{_FLAGS[name]}:{rest}" if sep and name in _FLAGS else message



def markup_safe(text: str) -> str:
    """Text printed through rich as it is (no markup)."""
    from rich.markup import escape

    return escape(str(text))


@contextlib.contextmanager
def _stopping_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP (a batch scheduler, a closed terminal) stop the run as Ctrl-C
    does: as KeyboardInterrupt, so every ``finally`` removes what the run had begun."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summarise(caught: list[warnings.WarningMessage]) -> None:
    """Third-party warnings as one line (in full with --debug)."""
    if not caught:
        return
    sources = sorted({Path(w.filename).parts[-2] if len(Path(w.filename).parts) > 1
                      else w.filename for w in caught})
    first = str(caught[0].message).splitlines()[0][:120]
    print(f"clemalign: note: {len(caught)} warning(s) from {', '.join(sources[:3])} "
          f"(first: {first}); rerun with --debug to see them all", file=sys.stderr)


def _os_error(exc: OSError) -> str:
    name = exc.filename or ""
    reason = exc.strerror or str(exc)
    return f"{name}: {reason}" if name else reason


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a script, exits with) the exit status.

    Exit status: 0 done, 2 bad input (one line naming the file or flag), 3 ``--strict``
    and a failed verdict, 130 interrupted (Ctrl-C, SIGTERM, SIGHUP: nothing left
    half-written), 1 an internal error (please report it).
    """
    args = _two_number_sizes(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    logged = _Collect()
    root = logging.getLogger()
    if not debug:  # libraries' log messages (tifffile's) join the warnings' summary
        root.addHandler(logged)
    try:
        with _stopping_signals(), warnings.catch_warnings(record=not debug) as caught:
            status = _run(args, debug)
    finally:
        root.removeHandler(logged)
    if status in (0, 3):  # after an error its one line is what matters
        _summarise([*(caught or []), *logged.messages])
    return status


class _Collect(logging.Handler):
    """Keeps WARNING and above as warning messages (instead of printing them)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[warnings.WarningMessage] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(warnings.WarningMessage(
            record.getMessage(), UserWarning, record.pathname, record.lineno))


def _run(args: list[str], debug: bool) -> int:
    try:
        # not app.main: it prints a blank line on Ctrl-C before turning it into Abort
        with app.make_context("clemalign", args) as ctx:
            rv = app.invoke(ctx)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("clemalign: aborted", file=sys.stderr)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `clemalign`: the help
        print(exc.format_message(), file=sys.stderr)
        return exc.exit_code
    except click.UsageError as exc:  # one line, naming the flag, like every other error
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        print(f"clemalign: error: {exc.format_message()}{where}", file=sys.stderr)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except InputError as exc:
        if debug:
            raise
        print(f"clemalign: error: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the user gave: missing, unwritable, full, too long
        if debug:
            raise
        print(f"clemalign: error: {_os_error(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            raise
        print("clemalign: error: not enough memory; choose a smaller --roi, or run on a "
              "machine with more memory", file=sys.stderr)
        return 2
    except Exception as exc:  # report, never a bare traceback
        if debug:
            raise
        text = str(exc).splitlines()[0] if str(exc) else ""
        print(f"clemalign: internal error: {type(exc).__name__}: {text} — please report it "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0
