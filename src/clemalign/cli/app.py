"""The ``clemalign`` command group, its shared options and consoles, and ``main``.

Errors in the input (files, flags, image content) print one line on stderr and exit
with status 2; ``--debug`` shows the traceback instead.  Library errors name Python
parameters; :func:`main` names the flags that set them.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console

from ..errors import InputError

__all__ = ["app", "main", "out", "err", "voxel_size_option", "markup_safe"]

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a script, exits with) the exit status."""
    args = _two_number_sizes(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    try:
        rv = app.main(args=args, prog_name="clemalign", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except InputError as exc:
        if debug:
            raise
        print(f"clemalign: error: {_as_flags(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # report, never a bare traceback
        if debug:
            raise
        print(f"clemalign: internal error: {type(exc).__name__}: {exc} (rerun with --debug "
              "for the traceback)", file=sys.stderr)
        return 1
    return rv if isinstance(rv, int) else 0
