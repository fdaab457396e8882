"""Metrics out of a run: JSONL file, TensorBoard events, console progress.

Only process 0 writes files. Every record of `metrics.jsonl` is one JSON
object with `step`, `time` and the scalar metrics of that step; a resumed
run first drops the records after its checkpoint's step (they belong to
training that is redone) and the evaluation records of that step itself (the
engine evaluates the restored step again: its evaluation may not have finished),
so each step appears once.

`route_logs` (used by the command line) keeps the console readable: jhseg's
own messages and every warning go to the console, the complete log of every
library (orbax, TFDS, JAX/XLA at INFO) to `workdir/run.log`.
"""
from __future__ import annotations

import json
import logging as py_logging
from logging import handlers as py_log_handlers
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging

_JHSEG_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Library warnings that are expected in every run and say nothing to act on: orbax warns
# at each save that no metrics came with it, because the engine saves a step before
# evaluating it and attaches the metrics afterwards (Checkpointer.attach_metrics); TFDS
# warns about the version folder of a dataset it is about to build. They stay in run.log.
_EXPECTED_WARNINGS = ("Requested `tracked_metric`; did not provide metrics",
                      "has no dataset_info.json")


class _OwnMessagesAndWarnings(py_logging.Filter):
  """Passes jhseg's messages (by source file) and other libraries' warnings and errors."""

  def filter(self, record: py_logging.LogRecord) -> bool:
    if getattr(record, "console", True) is False:  # logged with extra={"console": False}
      return False
    if record.pathname.startswith(_JHSEG_ROOT):
      return True
    if record.levelno < py_logging.WARNING:
      return False
    message = record.getMessage()
    return not any(expected in message for expected in _EXPECTED_WARNINGS)


class _ConsoleFormatter(py_logging.Formatter):
  """`HH:MM:SS message`, with the level named for warnings and errors."""

  def __init__(self):
    super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
    self._alarm = py_logging.Formatter("%(asctime)s %(levelname)s: %(message)s",
                                       datefmt="%H:%M:%S")

  def format(self, record: py_logging.LogRecord) -> str:
    return (self._alarm if record.levelno >= py_logging.WARNING else super()).format(record)


def route_logs(workdir: str, *, verbose: bool = False) -> str:
  """Sends every log record to `workdir/run.log`, and a readable subset to the console.

  The console gets jhseg's INFO messages (progress, evaluations, checkpoints)
  and every library's warnings; `verbose` lets everything through. Returns
  the log file's path (`run.<i>.log` for process i > 0). Also hides TFDS's
  progress bars unless `verbose` (they bypass Python logging).
  """
  os.makedirs(workdir, exist_ok=True)
  root = py_logging.getLogger()
  root.removeHandler(logging.get_absl_handler())
  console = py_logging.StreamHandler(sys.stderr)
  console.setFormatter(_ConsoleFormatter())
  if not verbose:
    console.addFilter(_OwnMessagesAndWarnings())
  # The log file is named by the process index, which starts JAX's backend, which logs
  # (e.g. its TPU probe): those records wait in memory for the file, not on the console.
  early = py_log_handlers.MemoryHandler(capacity=1 << 20, flushLevel=py_logging.CRITICAL + 1)
  for handler in (early, console):
    root.addHandler(handler)
  logging.set_verbosity(logging.INFO)
  root.setLevel(py_logging.INFO)
  if not verbose:
    import tensorflow_datasets as tfds  # Deferred: heavy, and only the CLI quiets it.
    tfds.disable_progress_bar()
  index = jax.process_index()
  path = os.path.join(os.path.abspath(workdir), f"run.{index}.log" if index else "run.log")
  to_file = py_logging.FileHandler(path)
  to_file.setFormatter(logging.PythonFormatter())
  early.setTarget(to_file)
  early.close()  # flushes the early records into the file
  root.removeHandler(early)
  root.addHandler(to_file)
  logging.info("full log in %s", path)
  return path


def _scalar(value: Any) -> float | None:
  array = np.asarray(value)
  return float(array) if array.size == 1 and array.dtype.kind in "biuf" else None


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, total_steps: int,
               resume_step: int | None = None):
    self._primary = jax.process_index() == 0
    self._total = total_steps
    self._start_time = None
    self._start_step = None
    self._jsonl = None
    self._tb = None
    if self._primary:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "metrics.jsonl")
      if resume_step is not None:  # The step the run (re)starts from: 0 for a new run.
        _drop_records_after(path, resume_step)
      self._jsonl = open(path, "a", buffering=1)
      from tensorboardX import SummaryWriter  # Deferred: only process 0 writes events.
      # purge_step: TensorBoard hides the previous events after the resumed step.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    scalars = {k: s for k, v in metrics.items() if (s := _scalar(v)) is not None}
    if self._primary:
      self._jsonl.write(json.dumps({"step": step, "time": time.time(), **scalars}) + "\n")
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()
    return scalars

  def progress(self, step: int, metrics: Mapping[str, float]) -> None:
    """Logs step, steps/s since the first call, ETA and the given metrics."""
    now = time.time()
    if self._start_time is None:
      self._start_time, self._start_step = now, step
    done = step - self._start_step
    rate = done / (now - self._start_time) if done and now > self._start_time else 0.0
    eta = (self._total - step) / rate if rate else float("nan")
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    logging.info("step %d/%d  %.2f steps/s  ETA %s  %s", step, self._total, rate,
                 _format_seconds(eta), shown)

  def close(self) -> None:
    if self._primary:
      self._jsonl.close()
      self._tb.close()


def _drop_records_after(path: str, step: int) -> None:
  """Rewrites `path` (atomically) without the records of steps after `step` and without
  the evaluation records (`eval/...` metrics) of `step` itself."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if line.strip() and (
      _record_step(line) < step or _record_step(line) == step and not _is_evaluation(line))]
  if len(kept) == len(lines):
    return
  with open(path + ".tmp", "w") as f:
    f.writelines(kept)
  os.replace(path + ".tmp", path)
  logging.info("metrics.jsonl: dropped %d records after step %d (training redone from its "
               "checkpoint)", len(lines) - len(kept), step)


def _is_evaluation(line: str) -> bool:
  return any(key.startswith("eval/") for key in json.loads(line))


def _record_step(line: str) -> float:
  try:
    return json.loads(line)["step"]
  except (ValueError, KeyError, TypeError):
    return float("inf")  # A line cut by a kill: dropped with the steps after the checkpoint.


class PassProgress:
  """Throttled progress of one pass over examples: `<what>: k/n examples, x/s, ETA`.

  Logs at most every `every_seconds` (nothing for passes shorter than that), so a long
  evaluation shows it is alive without filling the console.
  """

  def __init__(self, what: str, total: int, *, every_seconds: float = 60.0,
               clock=time.monotonic):
    self._what, self._total, self._every, self._clock = what, int(total), every_seconds, clock
    self._start = self._last = clock()
    self.done = 0

  def advance(self, count: int) -> None:
    self.done += int(count)
    now = self._clock()
    if now - self._last < self._every:
      return
    self._last = now
    rate = self.done / (now - self._start) if now > self._start else 0.0
    eta = (self._total - self.done) / rate if rate else float("nan")
    logging.info("%s: %d/%d examples  %.2f/s  ETA %s", self._what, self.done, self._total,
                 rate, _format_seconds(eta))


def _format_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}"
