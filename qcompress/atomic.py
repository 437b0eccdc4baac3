"""Write files and folders so that a failure or Ctrl-C never leaves a partial result at the final path.

A run that writes an output over time (compress's Parquet file, train's model folder) holds `lock_folder` on its
working folder (OUT.partial/, OUT.ckpt/), so that a second run writing the same output is refused at once.

Every output file goes through `atomic_file`, which also decides what an existing non-regular path gets
(`written_through`): a pipe (a FIFO, a shell's `>(...)`) or a character device (`/dev/null`, a terminal) is
written through, never replaced, and receives the whole output once it is complete (nothing on failure); any other
kind (a socket, a block device) is refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from qcompress.errors import InputError

__all__ = ["written_through", "atomic_file", "atomic_dir", "lock_folder"]


def _default_mode(directory: bool) -> int:
    """The mode a plain open()/mkdir() would give: mkstemp/mkdtemp use 0600/0700, which would hide results from
    the user's group even when their umask shares them."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def written_through(path: str | os.PathLike) -> bool:
    """Whether `path` is a pipe or a character device, which an output is written through (not renamed onto);
    False for a regular file or a path that does not exist. Anything else that exists and is not a regular file
    (a folder, a socket, a block device) raises `InputError`, naming it.

    Example:
        >>> written_through("/dev/null"), written_through("/no/such/file")
        (True, False)
        >>> written_through("/")
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: /: is a folder, not a file: give a file path
    """
    try:
        mode = os.stat(path).st_mode  # through symbolic links: /dev/stdout, a shell's /dev/fd/63
    except (FileNotFoundError, NotADirectoryError):  # not there (or under a file: writing it will say so)
        return False
    if stat.S_ISREG(mode):
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return True
    kind = "a folder" if stat.S_ISDIR(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a block device" if stat.S_ISBLK(mode) else "a special file"
    raise InputError(f"is {kind}, not a file: give a file path" + ("" if kind == "a folder" else
                     " (pipes and character devices such as /dev/null are written through)"), file=path)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds. A pipe or a
    character device at `path` (`written_through`) gets the temporary file's bytes instead, written into it once the
    block succeeds; the temporary file is then in the system's temporary folder.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> with atomic_file(d / "out.txt") as tmp:
        ...     _ = tmp.write_text("done")
        >>> (d / "out.txt").read_text()
        'done'
    """
    path = Path(path)
    through = written_through(path)
    if not through:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=None if through else path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if through:
            with open(tmp_path, "rb") as source, open(path, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            tmp_path.unlink()
            return
        if tmp_path.exists():
            os.chmod(tmp_path, _default_mode(directory=False))
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; move it to `path` only if the block succeeds.

    With `overwrite`, an existing folder at `path` is replaced (after the new one is complete); anything else at
    `path` (a file, a pipe, a device) never is.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError("exists and is not a folder; it is never replaced: give a folder path", file=path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        # Libraries write some files through their own temporary files (safetensors: 0600); everything in the
        # folder gets the mode a plain open()/mkdir() would give, as every other output does.
        for root, dirs, files in os.walk(tmp):
            for name in dirs:
                os.chmod(os.path.join(root, name), _default_mode(directory=True))
            for name in files:
                os.chmod(os.path.join(root, name), _default_mode(directory=False))
        os.chmod(tmp, _default_mode(directory=True))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def lock_folder(folder: Path, output: str | os.PathLike, what: str = "file") -> int:
    """Hold `folder/lock` exclusively (flock; the folder is made if needed) and return its descriptor (closing it
    releases the lock); refuse at once, with an `InputError` naming `output` (a `what`), when another live process
    holds it. A killed process's lock goes with it.

    The lock file is checked to be the one on disk after locking: a run that finished meanwhile deletes it, and
    locking its deleted copy would let two writers in.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp()) / "out.partial"
        >>> fd = lock_folder(folder, "out")
        >>> lock_folder(folder, "out")
        Traceback (most recent call last):
        ...
        qcompress.errors.InputError: out: another qcompress run is writing this file (it holds the lock .../out.partial/lock); wait for it to finish, or stop it and rerun
        >>> os.close(fd)
    """
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise InputError(f"cannot make the folder {folder}: a part of its path is a file", file=output) from None
        path = folder / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed by a run that just finished: make it again
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise InputError(
                f"another qcompress run is writing this {what} (it holds the lock {path}); wait for it to finish, or "
                "stop it and rerun", file=output,
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
