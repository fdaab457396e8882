"""Shared by the benchmarks' child processes: compile a jitted train step, time it."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np


def compile_and_time(step_fn: Callable, state: Any, data: Any,
                     steps: int) -> tuple[float, float, Any]:
  """(compile seconds, mean milliseconds per step, last metrics) of the engine's step.

  `step_fn(state, data, step, lr_scale)` as `jhseg.train.loop._make_train_step`; one
  warm-up step runs before the timed ones.
  """
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, data, np.int32(1), np.float32(1)).compile()
  compile_s = time.perf_counter() - t0
  state, metrics = compiled(state, data, np.int32(1), np.float32(1))
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for s in range(steps):
    state, metrics = compiled(state, data, np.int32(s + 2), np.float32(1))
  jax.block_until_ready(metrics)
  return compile_s, 1000 * (time.perf_counter() - t0) / steps, metrics
