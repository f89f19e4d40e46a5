"""Writing files so that nothing the user had is lost and nothing partial is left under a final name.

Every file yolo_ext writes (pruned checkpoints, reports, plots, fine-tuning checkpoints) is first written to a hidden
temporary file beside its final name, then moved into place in one step. The temporary name carries our marker and the
writer's process id and keeps the suffix (``.best.yolo_ext-1234.tmp.pt``: code that picks a format by suffix, as
Ultralytics and matplotlib do, still works on it), so a later run can tell a temp file left by a killed process
(its pid is gone) from one another run is still writing, and remove only the former.

Publishing without ``overwrite`` uses a hard link, which the OS refuses atomically when the name exists: two runs that
picked the same default name cannot replace each other's result; the second one learns it and takes the next name.
Files that belong together (a pruned checkpoint, its report and its plot) are published under :func:`folder_lock`, so
runs replacing the same names (``--overwrite``) take turns and the set always comes from one run.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["folder_lock", "publish", "remove_stale_temps", "temp_path", "writing"]

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; folder_lock does not serialise there
    fcntl = None

_TEMP = re.compile(r"^\.(?P<stem>.+)\.yolo_ext-(?P<pid>\d+)\.tmp(?P<suffix>\.[^.]*)?$")


def temp_path(final: str | Path) -> Path:
    """The hidden temporary name this process writes ``final`` under: ``.<stem>.yolo_ext-<pid>.tmp<suffix>``,
    beside it."""
    final = Path(final)
    return final.with_name(f".{final.stem}.yolo_ext-{os.getpid()}.tmp{final.suffix}")


_WINDOWS = os.name == "nt"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. POSIX: signal 0 (checks, sends nothing). Windows has no signal 0
    (``os.kill(pid, 0)`` there sends CTRL_C_EVENT to the process group), so it asks the kernel instead."""
    if pid == os.getpid():
        return True
    if _WINDOWS:
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


def _alive_windows(pid: int) -> bool:
    """``OpenProcess`` + ``GetExitCodeProcess``: running while the exit code reads STILL_ACTIVE."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    kernel32.OpenProcess.restype = wintypes.HANDLE
    process_query_limited_information, still_active, error_access_denied = 0x1000, 259, 5
    handle = kernel32.OpenProcess(process_query_limited_information, False, pid)
    if not handle:
        return ctypes.get_last_error() == error_access_denied  # someone else's live process
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True  # cannot tell: keep its files
        return code.value == still_active
    finally:
        kernel32.CloseHandle(handle)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete our temporary files in ``folder`` whose writing process no longer runs; returns what was removed.

    Only names of our own pattern are touched, and never one whose process is alive (a concurrent run's file).
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(".*.yolo_ext-*.tmp*"):
        m = _TEMP.match(path.name)
        if m and not _alive(int(m["pid"])):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:  # another run cleaned it first
                pass
    return removed


def publish(tmp: Path, final: Path, overwrite: bool = False) -> None:
    """Move the complete file ``tmp`` to ``final`` in one step.

    Without ``overwrite`` an existing ``final`` is never replaced: FileExistsError is raised instead, atomically even
    when another process creates ``final`` at the same moment (hard link where the file system supports it).
    """
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError as e:  # no hard links here (some network / FAT file systems): check, then rename
        if e.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}:
            raise
        if final.exists():
            raise FileExistsError(errno.EEXIST, "File exists", str(final)) from e
        os.replace(tmp, final)
    else:
        tmp.unlink()


@contextmanager
def writing(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write ``final``'s content to; on success it is published, on any failure removed.

    Stale temporary files of killed runs in the same folder are removed first.

    Examples:
        >>> with writing(tmp_dir / "report.txt") as tmp:  # doctest: +SKIP
        ...     tmp.write_text("params ...")
    """
    final = Path(final)
    remove_stale_temps(final.parent)
    tmp = temp_path(final)
    try:
        yield tmp
        publish(tmp, final, overwrite)
    finally:
        tmp.unlink(missing_ok=True)


LOCK_NAME = ".yolo_ext.lock"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (other processes using it wait) while files that belong together are
    published. The lock file (``.yolo_ext.lock``) is removed on release; a killed holder's file is reused.

    POSIX advisory lock (``fcntl.flock``); where there is none (Windows), the block runs unlocked.
    """
    if fcntl is None:
        yield
        return
    path = Path(folder) / LOCK_NAME
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            now = os.stat(path)
        except FileNotFoundError:  # the previous holder removed it while we waited: lock the new one
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)  # locked a file its holder had already removed; another one is the lock now
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while still holding it, so a waiter sees it went and locks a fresh one
        os.close(fd)
