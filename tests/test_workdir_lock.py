"""One run per workdir (issue 11, point 2): a second process refuses while the first holds the
lock, the lock goes with its holder, and a lock left by a killed process is taken over."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from jhseg.train import workdir_lock

# The module alone, not the `jhseg.train` package (whose import starts TF and the tasks).
_IMPORT = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("workdir_lock", {workdir_lock.__file__!r})
workdir_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(workdir_lock)
WorkdirLock, WorkdirBusyError = workdir_lock.WorkdirLock, workdir_lock.WorkdirBusyError
"""
# Holds the lock of argv[1] until its stdin closes (or forever, to be killed).
_HOLDER = _IMPORT + """
with WorkdirLock(sys.argv[1]):
  print("HELD", flush=True)
  sys.stdin.read()
"""
_TRY = _IMPORT + """
try:
  with WorkdirLock(sys.argv[1]):
    print("ACQUIRED", flush=True)
except WorkdirBusyError as err:
  print("BUSY:", err, flush=True)
"""
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _start_holder(workdir):
  holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_ENV)
  assert holder.stdout.readline().strip() == "HELD"
  return holder


def _try(workdir):
  return subprocess.run([sys.executable, "-c", _TRY, str(workdir)], capture_output=True,
                        text=True, timeout=60, env=_ENV).stdout


def test_second_process_refuses_while_the_first_holds_the_lock(tmp_path):
  holder = _start_holder(tmp_path)
  try:
    out = _try(tmp_path)
    assert out.startswith("BUSY:"), out
    assert f"pid {holder.pid} on host {socket.gethostname()}" in out
    assert str(tmp_path / "run.lock") in out
  finally:
    holder.stdin.close()  # The holder leaves its `with`: the lock is released.
    holder.wait(timeout=30)
  assert not (tmp_path / "run.lock").exists()
  assert _try(tmp_path).strip() == "ACQUIRED"


def test_lock_of_a_killed_process_is_stale_and_taken_over(tmp_path):
  holder = _start_holder(tmp_path)
  holder.send_signal(signal.SIGKILL)
  holder.wait(timeout=30)
  assert json.loads((tmp_path / "run.lock").read_text())["pid"] == holder.pid  # Left behind.
  assert _try(tmp_path).strip() == "ACQUIRED"


def test_reused_pid_or_other_host_is_not_taken_for_its_holder(tmp_path):
  lock = tmp_path / "run.lock"
  # Our own pid, but another process start time: a pid the kernel has given to someone else.
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                              "start_time": "1"}))
  with workdir_lock.WorkdirLock(str(tmp_path)):
    assert json.loads(lock.read_text())["pid"] == os.getpid()
  # Another host: it cannot be checked from here, so the run refuses.
  lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "command": "train"}))
  with pytest.raises(workdir_lock.WorkdirBusyError, match="pid 1 on host elsewhere"):
    workdir_lock.WorkdirLock(str(tmp_path)).acquire()


def test_lock_is_released_when_the_run_raises(tmp_path):
  @workdir_lock.one_run_per_workdir
  def failing_run(config, workdir):
    assert (tmp_path / "run.lock").exists()
    raise RuntimeError("boom")

  import ml_collections
  with pytest.raises(RuntimeError, match="boom"):
    failing_run(ml_collections.ConfigDict(), str(tmp_path))
  assert not (tmp_path / "run.lock").exists()
  start = time.monotonic()
  with workdir_lock.WorkdirLock(str(tmp_path)):
    pass
  assert time.monotonic() - start < 5
