"""Metrics out of a run: JSONL file, TensorBoard events, console progress.

Only process 0 writes files. Every record of `metrics.jsonl` is one JSON
object with `step`, `time` and the scalar metrics of that step.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging


def _scalar(value: Any) -> float | None:
  array = np.asarray(value)
  return float(array) if array.size == 1 and array.dtype.kind in "biuf" else None


class MetricWriter:
  """Writes scalar metrics to `workdir/metrics.jsonl` and TensorBoard events."""

  def __init__(self, workdir: str, *, total_steps: int):
    self._primary = jax.process_index() == 0
    self._total = total_steps
    self._start_time = None
    self._start_step = None
    self._jsonl = None
    self._tb = None
    if self._primary:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      from tensorboardX import SummaryWriter  # Deferred: only process 0 writes events.
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

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


def _format_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  minutes, secs = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}"
