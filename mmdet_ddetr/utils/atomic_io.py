"""The one way this package writes a file: to a temporary name beside it, then renamed.

A reader (a resumed Runner, a converter's user, the dataset's manifest check) must never see a
half-written file: after a crash, a kill or a full disk either the old file or no file is at
the destination. ``os.replace`` is atomic on POSIX and Windows when both names are on the same
filesystem, hence the temporary file in the destination's own folder. The data is fsync'ed
before the rename and the folder after it, so that after a power loss the new name cannot
point at blocks that never reached the disk.
"""
import contextlib
import os
import os.path as osp
import tempfile
from typing import IO, Callable, Iterator


def fsync_dir(dirname: str) -> None:
    """Persist a rename in ``dirname`` (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _mode_for(path: str) -> int:
    """Permission bits for a file written at ``path``."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it; restored at once
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def _replacing(path: str, suffix: str) -> Iterator[str]:
    """Yield a fresh temporary file name beside ``path``; on a clean exit the file is fsync'ed
    and renamed to ``path``, on an exception it is removed and ``path`` is left as it was."""
    folder = osp.dirname(osp.abspath(path))
    if not osp.isdir(folder):
        raise FileNotFoundError(f'cannot write {path!r}: folder {folder!r} does not exist '
                                '(create it first)')
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix=suffix, dir=folder)
    os.close(fd)
    try:
        # mkstemp creates the file private (0600); give it the mode the file it replaces had,
        # or the one open() would have given a new file (0666 minus the umask).
        os.chmod(tmp, _mode_for(path))
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    fsync_dir(folder)


@contextlib.contextmanager
def atomic_open(path: str, mode: str = 'wb', **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: Destination file. Its folder must exist.
        mode: ``'wb'`` or ``'w'`` (text; ``kwargs`` such as ``encoding`` go to :func:`open`).

    Yields:
        The open temporary file.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f'atomic_open writes whole files: mode must be "w" or "wb", not {mode!r}')
    with _replacing(path, '.tmp') as tmp, open(tmp, mode, **kwargs) as f:
        yield f


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Let ``write(tmp_path)`` produce a file by name (for writers that take a path, such as
    ``torch.onnx.export`` or ``matplotlib``'s ``savefig``), then rename it to ``path``.

    The temporary name keeps ``path``'s extension, because some writers pick the format from it.
    """
    with _replacing(path, '.tmp' + osp.splitext(path)[1]) as tmp:
        write(tmp)
