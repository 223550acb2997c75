"""Where things live on disk and how they are written: the one place for paths, atomic writes, locks and
content hashes. Every module that writes a file (cache entries, checkpoints, reports, figures) goes
through here, so a reader never sees half a file and a crash never leaves a half-written result in place.

- `repo_root()`, `default_cache_dir()`: the checkout and its git-ignored cache (``$LAYERSIM_CACHE``).
- `atomic_write_bytes`, `atomic_write_text`, `atomic_save` (torch.save), `atomic_savefig`: write to a
  temporary file in the same folder, flush it to disk, then ``os.replace`` it over the target.
- `atomic_folder(target)`: build a folder under a temporary name, rename it into place when the block ends
  without error (a reader sees the whole folder or none).
- `atomic_folder(target, replace=True)`, `swap_folder(new, target)`: build a folder, then put it in place of an
  existing one (the old one steps aside, the new one takes its place, then the old one goes).
- `temp_folder(target)`: the temporary folder of `atomic_folder` for a writer that cannot work inside one
  `with` block (the runner's staging folders): unique across hosts, protected by its writer's flock.
- `file_lock(path)`: an exclusive advisory lock (fcntl) so that of two processes asking for the same
  expensive result one computes and the other waits, then reuses it.
- `load_or_build(path, load, build)`: the one cache pattern: load the entry, else build it under a lock; an
  entry that fails to load is damaged and is rebuilt (with a warning).
- `hash_tensor`, `weights_fingerprint`, `stable_hash`: blake2b content hashes for cache keys.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
# trash older than this is left over from a killed remover. A temporary entry is alive while its writer holds
# an flock on it (a file: itself; a folder: its WRITER_LOCK file), which works across containers that share the
# folder; without one, by its writer's pid when the writer ran on this host, else by this age.
STALE_AFTER_S = 60.0
WRITER_LOCK = ".writer.lock"


# ---- paths ---------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The checkout this package lives in (lib/layersim/ -> the repository root)."""
    return Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """$LAYERSIM_CACHE, else data/cache/ in the checkout (git-ignored)."""
    env = os.environ.get("LAYERSIM_CACHE")
    return Path(env) if env else repo_root() / "data" / "cache"


# ---- atomic writes -------------------------------------------------------------------------------------
def _host() -> str:
    """This host's name as it goes into temporary names (no '-' or '@')."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"


def _tmp_name(path: Path) -> Path:
    """``.tmp-<name>-<pid>@<host>-<id>``: the pid means something only on the writer's host."""
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}@{_host()}-{uuid.uuid4().hex[:8]}")


def _hold(path: Path, *, create: bool) -> int:
    """Open `path` (creating it exclusively with `create`) and take an exclusive flock on it -> the fd; the
    writer keeps it until it is done, so `clean_leftovers` anywhere (another container too) leaves it alone."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if create else 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], *, mode: int = 0o644) -> Path:
    """Call ``write(tmp_path)`` to create a temporary file next to `path`, then rename it over `path`.

    The file is flushed to disk before the rename; on any error (or KeyboardInterrupt) the temporary file
    is removed and `path` keeps its previous content. `mode` is the permission of the result (0644, like
    any file a user creates, not mkstemp's 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    held = _hold(tmp, create=True)  # the writer's flock on the temporary file (the writers rewrite it in place)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        if not _disk_full(e):
            raise
        raise DiskFullError(f"no space left on device while writing {path}; it keeps its previous content "
                            "(if any). Free some space and run the same command again") from e
    finally:
        try:
            if tmp.exists():
                tmp.unlink()
        finally:
            os.close(held)
    return path


class DiskFullError(OSError):
    """A write failed because the disk is full (errno ENOSPC); its message is one sentence naming the file."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def _disk_full(error: BaseException) -> bool:
    """Whether `error` is a full disk: OSError ENOSPC / EDQUOT, or torch.save's zip writer failing to write
    (it raises RuntimeError "PytorchStreamWriter failed writing file ...: file write failed")."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(error)
    return "PytorchStreamWriter failed writing" in text or "file write failed" in text


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """JSON with `allow_nan=False`: a NaN or infinity in `obj` is an error, never invalid JSON."""
    return atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)``, atomically."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> Path:
    """``fig.savefig(path)``, atomically (the format is taken from `path`'s suffix)."""
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip("."), **kwargs))


def temp_folder(target: str | os.PathLike) -> tuple[Path, int]:
    """A new, empty temporary folder next to `target` (``.tmp-<name>-<pid>@<host>-<id>``: unique across hosts
    sharing the parent) whose writer's flock is held -> (folder, fd). While the fd is open, `clean_leftovers`
    anywhere (another container too) leaves the folder alone. To put it in place: `release_temp_folder` removes
    the lock file (the flock stays held), then `swap_folder` or ``os.replace``, then ``os.close(fd)``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(target)
    tmp.mkdir()
    try:
        return tmp, _hold(tmp / WRITER_LOCK, create=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def release_temp_folder(tmp: str | os.PathLike) -> None:
    """Remove the lock file of a `temp_folder` before it is renamed into place (its flock stays held through
    the fd until the caller closes it), so the finished folder is clean of it."""
    with contextlib.suppress(FileNotFoundError):
        (Path(tmp) / WRITER_LOCK).unlink()


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to `target`; when the block ends without error, rename it to `target`.

    If `target` appeared in the meantime (another process finished first) the new folder is discarded and
    the existing one kept; with ``replace=True`` the new folder replaces it instead (`swap_folder`). On error
    the temporary folder is removed and `target` is left as it was.
    """
    target = Path(target)
    tmp, held = temp_folder(target)  # the flock is held until the folder is in place or gone
    try:
        yield tmp
        release_temp_folder(tmp)
        if replace:
            swap_folder(tmp, target)
        else:
            try:
                os.replace(tmp, target)
            except OSError:  # target exists and is not empty: keep the one that was there first
                pass
    finally:
        try:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(held)


def swap_folder(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder `new` in the place of `target`: the old `target` steps aside, `new` is renamed into its
    place, and only then is the old one deleted (a reader finds the old folder or the new one)."""
    new, target = Path(new), Path(target)
    trash = target.with_name(f"{TRASH_PREFIX}{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(target, trash)
    except FileNotFoundError:
        trash = None
    os.replace(new, target)
    if trash is not None:
        _delete(trash)


def remove_folder(folder: str | os.PathLike) -> None:
    """Move a folder aside (atomic, so no reader sees it half deleted), then delete it."""
    folder = Path(folder)
    trash = folder.with_name(f"{TRASH_PREFIX}{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(folder, trash)
    except FileNotFoundError:
        return
    _delete(trash)


def _delete(path: Path) -> None:
    """Delete a folder, a file or a link (what stepped aside may be a file where a folder was expected)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(folder: str | os.PathLike, *, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary files/folders and trash left in `folder` by writers that were killed.

    An entry named ``.tmp-*-<pid>[@<host>]-<id>`` or ``.trash-*-<pid>-<id>`` whose writer still holds its flock
    is kept (so is one being written in another container that shares the folder). Otherwise it is removed
    when its writer ran on this host and its process is gone, or (pid or host unknown here) when it is older
    than `older_than_s`; trash also when older than that. Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for entry in folder.iterdir():
        if not entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
            continue
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        if _writer_holds(entry):  # a writer at work, in this container or another one sharing the folder
            continue
        parts = entry.name.rsplit("-", 2)
        pid, _, host = parts[1].partition("@") if len(parts) == 3 else ("", "", "")
        pid = int(pid) if pid.isdigit() else None
        here = not host or host == _host()  # a pid of another host (container) says nothing here
        stale = (pid is not None and here and pid != os.getpid() and not _pid_alive(pid)) or (
            (pid is None or not here) and age > older_than_s) or (entry.name.startswith(TRASH_PREFIX) and age > older_than_s)
        if stale:
            _delete(entry)
            removed.append(entry)
    return removed


def _writer_holds(entry: Path) -> bool:
    """Whether a writer holds the flock of the temporary `entry` (a file, or a folder's WRITER_LOCK)."""
    lock = entry / WRITER_LOCK if entry.is_dir() and not entry.is_symlink() else entry
    try:
        fd = os.open(lock, os.O_WRONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on `path` (created if missing) for the duration of the block.

    Two processes (two notebooks, two ranks of a job) that compute the same cached result take the lock
    around "check the cache, else compute and write": one computes, the other waits and then finds it.
    The lock is released when the process dies, so a killed holder never blocks the others.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def load_or_build(path: str | os.PathLike, load: Callable[[Path], Any], build: Callable[[Path], Any], *,
                  lock: str | os.PathLike | None = None, damaged: tuple = (Exception,), what: str = "cache entry",
                  rebuild: bool = False) -> Any:
    """The one cache pattern: ``load(path)`` if the entry exists, else ``build(path)``, under a lock.

    path: the entry, a file or a folder. load(path) -> the value; it raises one of `damaged` when the entry is
    unreadable, which is then removed (with a RuntimeWarning) and built again. build(path) -> the value; it
    writes the entry atomically itself (`atomic_folder`, `atomic_save`, ...). lock: the lock file (default
    ``<parent>/.locks/<name>``): of two processes asking for the same entry one builds, the other waits, then
    loads. rebuild=True removes an existing entry first.
    """
    import warnings

    path = Path(path)
    with file_lock(lock if lock is not None else path.parent / ".locks" / path.name):
        if path.exists() and rebuild:
            _discard(path)
        if path.exists():
            try:
                return load(path)
            except damaged as e:
                warnings.warn(f"{what} {path} is corrupt ({type(e).__name__}: {str(e)[:200]}); rebuilding it",
                              RuntimeWarning, stacklevel=3)
                _discard(path)
        return build(path)


def _discard(path: Path) -> None:
    if path.is_dir():
        remove_folder(path)
    else:
        path.unlink(missing_ok=True)


# ---- content hashes ------------------------------------------------------------------------------------
def hash_tensor(digest, tensor: torch.Tensor) -> None:
    """Feed a tensor's dtype, shape and bytes into a hashlib digest."""
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy())


def weights_fingerprint(model: torch.nn.Module) -> str:
    """blake2b hash of every parameter and buffer (name, dtype, shape, bytes) of `model`."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:".encode())
        hash_tensor(digest, tensor)
    return digest.hexdigest()


def stable_hash(obj: Any) -> str:
    """blake2b hash of a JSON-serialisable object (keys sorted): the key of a cache entry."""
    return hashlib.blake2b(json.dumps(obj, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()


def file_checksum(path: str | os.PathLike) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
