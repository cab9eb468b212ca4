"""Output-folder locks: a second concurrent run is refused with a one-line error naming the lock; a stale lock
(dead pid on this host, or a reused pid) is reported and taken over; another host's lock needs ``force``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading

import pytest

from common_regs.run_dir import (
    LOCK_NAME,
    OutputLock,
    OutputLockedError,
    lock_path_for,
    read_success_marker,
    remove_stale_temporaries,
    write_success_marker,
)
from pipelines.cli import main
from pipelines.faults import DEMO_DIR, write_recsys_config

_HOLDER = (
    "import sys\n"
    "from common_regs.run_dir import OutputLock\n"
    "lock = OutputLock(sys.argv[1]).acquire()\n"
    "print('held', flush=True)\n"
    "sys.stdin.read()\n"
    "lock.release()\n"
)


@pytest.fixture
def held_by_another_process():
    """Start a process holding a lock file; yield a function taking the path; the process ends at teardown."""
    processes = []

    def hold(path):
        process = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in processes:
        process.stdin.close()
        process.wait(timeout=120)


def _lock_record(path, **fields):
    record = {"pid": 1, "host": socket.gethostname(), "process_start": None, "time": "2026-01-01T00:00:00+00:00",
              "argv": ["x"], **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_second_run_into_a_locked_folder_is_refused(tmp_path, held_by_another_process, capsys):
    run = tmp_path / "run"
    holder = held_by_another_process(lock_path_for(run))
    config = write_recsys_config(tmp_path / "config.yaml")
    capsys.readouterr()
    assert main(["recsys", "train", "--config", str(config), "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"pid {holder.pid}" in err and str(run / LOCK_NAME) in err and "in use by another run" in err
    assert main(["recsys", "train", "--config", str(config), "--output-dir", str(run), "--force"]) == 2  # live: never
    assert not (run / "model").exists() and json.loads((run / LOCK_NAME).read_text())["pid"] == holder.pid

    index = tmp_path / "index"
    held_by_another_process(lock_path_for(index, inside=False))
    capsys.readouterr()
    assert main(["retrieval", "index", "--data", str(DEMO_DIR / "beir"), "--index", str(index)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / ".index.lock") in err and not index.exists()


def test_stale_lock_of_a_dead_process_is_reported_and_taken_over(tmp_path, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    path = lock_path_for(tmp_path / "run")
    _lock_record(path, pid=dead_pid)
    with caplog.at_level(logging.WARNING, logger="common_regs.run_dir"), OutputLock(path) as lock:
        owner = json.loads(path.read_text())
        assert lock.held and owner["pid"] != dead_pid and owner["host"] == socket.gethostname()
    assert f"pid {dead_pid} is not running" in caplog.text and str(path) in caplog.text
    assert not path.exists()


def test_reused_pid_is_stale_and_other_hosts_need_force(tmp_path, caplog):
    path = tmp_path / "x.lock"
    _lock_record(path, pid=os.getpid(), process_start="1")  # our pid, but a process started at another time
    with caplog.at_level(logging.WARNING), OutputLock(path):
        pass
    assert "now belongs to another process" in caplog.text

    _lock_record(path, host="some-other-host", pid=4242)
    with pytest.raises(OutputLockedError, match="cannot be checked from this host: pass --force"):
        OutputLock(path).acquire()
    with OutputLock(path, force=True) as lock:
        assert lock.held and json.loads(path.read_text())["host"] == socket.gethostname()

    path.write_text("{not json")  # e.g. written by hand; unreadable owner: only force takes it
    with pytest.raises(OutputLockedError, match="unreadable owner record"):
        OutputLock(path).acquire()


def test_exactly_one_of_many_concurrent_acquirers_wins(tmp_path):
    path = tmp_path / "race.lock"
    barrier = threading.Barrier(8)
    outcomes = []

    def attempt():
        barrier.wait()
        try:
            outcomes.append(OutputLock(path).acquire())
        except OutputLockedError as err:
            outcomes.append(err)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if isinstance(o, OutputLock)]
    assert len(winners) == 1 and sum(isinstance(o, OutputLockedError) for o in outcomes) == 7
    winners[0].release()
    assert not path.exists()


def test_completion_marker_and_stale_temporaries(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert read_success_marker(folder) is None
    (folder / "_SUCCESS.json").write_text('{"complete": tru')  # half-written by hand: not complete
    assert read_success_marker(folder) is None
    write_success_marker(folder, config={"b": 1, "a": [1, 2]}, extra={"job": "test"})
    marker = read_success_marker(folder)
    assert marker["config_sha256"] == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert marker["job"] == "test" and "torch" in marker["versions"]
    (tmp_path / ".out.abc123.tmp").mkdir()  # an atomic_dir build killed before its rename
    (tmp_path / ".out.x.tmp").write_text("partial")
    (tmp_path / ".other.y.tmp").write_text("someone else's")
    assert sorted(p.name for p in remove_stale_temporaries(folder)) == [".out.abc123.tmp", ".out.x.tmp"]
    assert (tmp_path / ".other.y.tmp").exists() and folder.is_dir()
