"""The one exception type for bad user input.

Every check on files, flags and image content raises :class:`InputError` with a
single line that names the file or flag and says what to do.  The CLI turns it
into that line on stderr and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["InputError", "reading_text"]


class InputError(ValueError):
    """Input that clemalign cannot use (file, flag, voxel size or image content)."""


@contextlib.contextmanager
def reading_text(path: os.PathLike | str, what: str = "text file") -> Iterator[None]:
    """Within the block, a text file's undecodable bytes, oversized CSV fields, deep
    nesting or OS errors become one :class:`InputError` naming ``path``."""
    import csv

    try:
        yield
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 {what} (byte {exc.start}: "
                         f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8 text"
                         ) from None
    except csv.Error as exc:
        raise InputError(f"{path}: not a readable CSV {what} ({exc})") from None
    except RecursionError:
        raise InputError(f"{path}: nested too deeply to be a {what}") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
