"""A run's output files, written as a whole or not at all.

:func:`staged_output` hands out an empty temporary folder beside the target; the run
writes every file there and, only when all are complete, they are moved into the target
(one rename when the target folder is new; else one rename per file with the stopping
signals held off).  A failure or an interruption (Ctrl-C, SIGTERM, SIGHUP: see
:func:`clemalign.cli.app.main`) removes the temporary folder and any parent folder the run
created, so the target is left exactly as it was; ``overwrite`` replaces earlier files
only once the new ones are complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import InputError

__all__ = ["staged_output", "refuse_existing", "STAGING_PREFIX"]

STAGING_PREFIX = ".clemalign-partial-"
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def refuse_existing(folder: Path, names: Iterable[str], *, overwrite: bool) -> None:
    """Refuse when an output exists (a dangling link counts) unless ``overwrite``, or
    when the folder path is taken by a file.

    Raises
    ------
    InputError
    """
    folder = Path(folder)
    for parent in (folder, *folder.parents):
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise InputError(f"{folder}: {parent} is a file, not a folder; choose another "
                                 "output folder (-o)")
            break
    for name in names:
        path = folder / name
        if os.path.lexists(path):
            if not overwrite:
                what = "a link to a missing target" if not path.exists() else "already exists"
                raise InputError(f"{path}: {what}; pass --overwrite to replace it")
            if path.is_dir() and not path.is_symlink() and not name.endswith(".zarr"):
                raise InputError(f"{path}: is a folder; remove it or choose another output "
                                 "folder (-o)")


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder``'s missing parents; the ones created, deepest first."""
    created = []
    for parent in reversed(folder.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created[::-1]


def _writable_error(folder: Path, exc: OSError) -> InputError:
    reason = {errno.EROFS: "is on a read-only file system",
              errno.EACCES: "is not writable (permission denied)",
              errno.ENAMETOOLONG: "has a name too long for the file system",
              errno.ENOSPC: "has no space left",
              errno.EFBIG: "cannot hold a file this large (file size limit)",
              }.get(exc.errno, f"cannot be written ({exc.strerror})")
    return InputError(f"{folder}: the output folder {reason}; choose another (-o)")


@contextlib.contextmanager
def staged_output(folder: str | os.PathLike, names: Iterable[str], *,
                  overwrite: bool = False) -> Iterator[Path]:
    """An empty temporary folder whose files move into ``folder`` when the block ends
    without error.

    Parameters
    ----------
    folder : path
        The output folder (created when missing, with its parents).
    names : iterable of str
        The file names the run writes (checked before anything is written).
    overwrite : bool
        Replace existing files of these names (only after the new ones are complete).

    Yields
    ------
    Path
        The temporary folder to write into (on the same file system as ``folder``).

    Raises
    ------
    InputError
        An output exists and ``overwrite`` is false; the folder cannot be created or
        written (read-only, no permission, a file in its path, name too long, disk full).
    """
    folder = Path(folder)
    names = list(names)
    refuse_existing(folder, names, overwrite=overwrite)
    created: list[Path] = []
    try:
        created = _make_parents(folder)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + folder.name[:40] + ".",
                                        dir=folder.parent))
    except OSError as exc:
        _remove(created)
        raise _writable_error(folder, exc) from None
    committed = False
    try:
        try:
            yield staging
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES):
                raise _writable_error(folder, exc) from None
            if exc.errno is None:  # a short write reported by a library (tifffile)
                raise InputError(f"{folder}: writing the outputs failed ({exc}); check the "
                                 "free space and the file size limit") from None
            raise
        _commit(staging, folder, names, overwrite)
        committed = True
    finally:
        if not committed:
            shutil.rmtree(staging, ignore_errors=True)
            _remove(created)


def _remove(folders: list[Path]) -> None:
    """Remove the (empty) folders a failed run created, deepest first."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _commit(staging: Path, folder: Path, names: list[str], overwrite: bool) -> None:
    """Move the complete files into ``folder`` with the stopping signals held off; an
    earlier run's file of a name this run did not write is removed (one run per folder)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; the output is not
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        if not os.path.lexists(folder):
            os.rename(staging, folder)  # one step: the folder appears complete
            return
        refuse_existing(folder, names, overwrite=overwrite)  # nothing appeared meanwhile
        for name in names:
            target = folder / name
            if os.path.lexists(staging / name):
                if target.is_dir() and not target.is_symlink():  # an OME-Zarr folder
                    shutil.rmtree(target)
                os.replace(staging / name, target)
            elif target.is_dir() and not target.is_symlink():  # an earlier run's
                shutil.rmtree(target)
            elif os.path.lexists(target):  # an earlier run's, this one has none
                os.remove(target)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
