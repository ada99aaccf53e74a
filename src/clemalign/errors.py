"""The one exception type for bad user input.

Every check on files, flags and image content raises :class:`InputError` with a
single line that names the file or flag and says what to do.  The CLI turns it
into that line on stderr and exit status 2.
"""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Input that clemalign cannot use (file, flag, voxel size or image content)."""
