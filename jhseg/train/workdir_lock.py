"""One run per workdir: a lock file held by process 0 for the whole run.

`workdir/run.lock` is created atomically (`O_CREAT | O_EXCL`) and holds the
holder's host, pid, process start time and command line; it is removed when
the run ends, however it ends (exception, KeyboardInterrupt). A lock left by
a run killed with `kill -9` is stale: on the same host its pid is no longer
alive (or now belongs to another process, told apart by the start time), and
it is taken over with a warning. A lock of another host cannot be checked
from here: the second run refuses, naming the holder and the file to delete
if that run is known to be gone.

With several processes, process 0 takes the lock and tells the others
whether it succeeded, so every process of a refused run stops.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import time
from typing import Any, Callable, Iterator

from absl import logging

LOCK_FILE = "run.lock"


class WorkdirBusyError(RuntimeError):
  """Another run holds the workdir's lock."""


def _start_time(pid: int) -> str | None:
  """The kernel's start time of `pid` (Linux /proc), to tell a reused pid apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _alive(holder: dict[str, Any]) -> bool:
  """Whether the holder (on this host) still runs; unknown hosts count as alive."""
  if holder.get("host") != socket.gethostname():
    return True
  pid = int(holder.get("pid", -1))
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Alive, owned by another user.
  started = holder.get("start_time")
  return started is None or _start_time(pid) in (None, started)


def _describe(holder: dict[str, Any]) -> str:
  return (f"pid {holder.get('pid')} on host {holder.get('host')}, started "
          f"{holder.get('started', '?')}: {holder.get('command', '?')}")


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds `workdir/run.lock` (raises WorkdirBusyError if taken)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
    self._held = False

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "start_time": _start_time(os.getpid()),
          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(2):  # A second attempt after removing a stale lock.
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read_holder()
        if holder is not None and _alive(holder):
          raise WorkdirBusyError(
              f"{os.path.dirname(self.path)} is in use by another run ({_describe(holder)}). "
              f"Wait for it to finish, use another --workdir, or delete {self.path} if that "
              "run is gone.") from None
        logging.warning("removing the stale lock %s of a run that no longer exists (%s)",
                        self.path, _describe(holder or {}))
        with contextlib.suppress(FileNotFoundError):
          os.unlink(self.path)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self._held = True
      return
    raise WorkdirBusyError(f"could not take the lock {self.path}: another run took it meanwhile")

  def _read_holder(self) -> dict[str, Any] | None:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return {}  # Released meanwhile: not alive, try again.
    except (OSError, ValueError):
      # Being written by its creator right now, or cut short: give it a moment.
      time.sleep(0.5)
      try:
        with open(self.path) as f:
          return json.load(f)
      except (OSError, ValueError):
        return None  # Unreadable: treated as stale.

  def release(self) -> None:
    if self._held:
      self._held = False
      with contextlib.suppress(FileNotFoundError):
        os.unlink(self.path)

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds the workdir's lock on process 0; every process raises if it is taken."""
  import jax  # Deferred: the lock itself needs no JAX (nor its start-up time).
  import numpy as np

  lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
  error = None
  if lock is not None:
    try:
      lock.acquire()
    except (WorkdirBusyError, OSError) as err:  # Told to the other processes before raising.
      error = err
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    busy = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
    if busy and error is None:
      error = WorkdirBusyError(f"process 0 could not take the lock of {workdir} (see its log)")
  if error is not None:
    raise error
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


def one_run_per_workdir(train: Callable) -> Callable:
  """Decorates `train(config, workdir, ...)` to run holding `workdir`'s lock."""

  @functools.wraps(train)
  def locked(config, workdir, *args, **kwargs):
    from jhseg.train import devices  # The process index needs jax.distributed first.

    devices.maybe_initialize_distributed(config)
    with hold(workdir):
      return train(config, workdir, *args, **kwargs)

  return locked
