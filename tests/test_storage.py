"""layersim.storage: temporary entries of writers in other containers, trash of replaced entries."""
import fcntl
import os
import subprocess
import time

import pytest

from layersim import storage
from layersim.storage import WRITER_LOCK, atomic_folder, atomic_write_text, clean_leftovers, swap_folder


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_writer_that_holds_its_lock_is_never_judged_dead_by_its_pid(tmp_path):
    """Issue 18: two containers sharing $LAYERSIM_CACHE see each other's pids as dead, and deleted each other's
    half-written entries. A writer's flock says it is alive, whatever its pid looks like here."""
    pid = dead_pid()
    folder = tmp_path / f".tmp-entry-{pid}-deadbeef"  # the pid of a writer in another container: not running here
    folder.mkdir()
    (folder / "features.0.part").write_bytes(b"half")
    held = os.open(folder / WRITER_LOCK, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    file = tmp_path / f".tmp-meta.json-{pid}-cafecafe"
    file.write_text("half")
    held_file = os.open(file, os.O_WRONLY)
    fcntl.flock(held_file, fcntl.LOCK_EX)
    other_host = tmp_path / f".tmp-entry-{pid}@another_container-abcdabcd"  # no lock yet, fresh: kept
    other_host.mkdir()
    try:
        assert clean_leftovers(tmp_path) == []
        assert folder.exists() and file.exists() and other_host.exists()
    finally:
        os.close(held)
        os.close(held_file)
    # the writers are gone (their locks released): a dead pid of this host is removed at once, another host's
    # unlocked entry once it is stale
    assert sorted(p.name for p in clean_leftovers(tmp_path)) == sorted([folder.name, file.name])
    os.utime(other_host, (time.time() - 2 * storage.STALE_AFTER_S,) * 2)
    assert clean_leftovers(tmp_path) == [other_host]


def test_atomic_writers_hold_their_temporary_entries_while_writing(tmp_path):
    seen = {}

    def write(tmp):
        seen["file"] = storage._writer_holds(tmp)
        tmp.write_text("x")

    storage.atomic_write(tmp_path / "a.txt", write)
    with atomic_folder(tmp_path / "entry") as tmp:
        seen["folder"] = storage._writer_holds(tmp)
        seen["cleaned"] = clean_leftovers(tmp_path)
        (tmp / "data").write_text("y")
    assert seen == {"file": True, "folder": True, "cleaned": []}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "entry"]
    assert sorted(p.name for p in (tmp_path / "entry").iterdir()) == ["data"]  # no lock file in the entry


def test_replacing_an_entry_that_is_a_file_leaves_no_trash(tmp_path):
    """Issue 18 (first round): an entry folder replaced where a file stood left a .trash-* file behind."""
    target = tmp_path / "entry"
    target.write_text("a file where a folder belongs")
    with atomic_folder(target, replace=True) as tmp:
        (tmp / "data").write_text("new")
    assert (target / "data").read_text() == "new"
    new = tmp_path / "new"
    new.mkdir()
    swap_folder(new, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]
    storage.remove_folder(target)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    def full(tmp):
        raise OSError(28, "No space left on device")

    atomic_write_text(tmp_path / "kept.txt", "old")
    with pytest.raises(OSError, match="no space left on device while writing .*kept.txt"):
        storage.atomic_write(tmp_path / "kept.txt", full)
    assert (tmp_path / "kept.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


def test_runner_staging_folders_are_unique_and_held_so_another_hosts_clean_up_keeps_them(tmp_path, monkeypatch):
    """Issue 18: the runner's staging folders were named by pid only (``.tmp-<name>-<pid>-<id>``) and protected
    only by the runner lock, so a runner on another host sharing the results folder judged them by a pid that
    means nothing there and deleted them. Now they are `storage.temp_folder`s: host in the name, writer's flock
    held until the results are swapped into place or removed."""
    import re

    from layersim.runner import jobs

    class FakePapermill:  # what _launch starts, without starting anything
        pid, returncode = 10 ** 7, 0

        def __init__(self, cmd, **kwargs):
            self.cwd = kwargs["cwd"]

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(jobs.subprocess, "Popen", FakePapermill)
    first = jobs._start("01_x", {}, tmp_path, tmp_path, "python3", 1)
    second = jobs._start("01_x", {}, tmp_path, tmp_path, "python3", 1)
    assert first.stage != second.stage and first.stage.parent == second.stage.parent == tmp_path
    assert re.fullmatch(rf"\.tmp-01_x-{os.getpid()}@{storage._host()}-[0-9a-f]{{8}}", first.stage.name)
    assert first.proc.cwd == first.stage and storage._writer_holds(first.stage)
    # the clean-up of a runner on another host: our pid means nothing there, our host is not its own
    monkeypatch.setattr(storage, "_host", lambda: "another_host")
    monkeypatch.setattr(storage, "_pid_alive", lambda pid: False)
    assert clean_leftovers(tmp_path, older_than_s=0.0) == []
    assert first.stage.is_dir() and second.stage.is_dir()
    jobs._stop(first)  # Ctrl-C: the staging folder goes and its lock is let go
    assert not first.stage.exists()
    os.close(second.held)  # a runner killed before it swapped its results in: the lock dies with it
    assert clean_leftovers(tmp_path, older_than_s=0.0) == [second.stage]
