"""Benchmark child processes: one per device count (fixed when JAX starts).

`run_child` starts the code of a benchmark in a fresh Python with N fake CPU devices
and returns the JSON object its last output line prints; inside the child,
`compile_and_time` compiles the engine's jitted train step and times it.
"""
from __future__ import annotations

import json
import statistics
import os
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code: str, argv: Sequence[Any], num_devices: int) -> dict:
  """Runs `python -c code *argv` on `num_devices` CPU devices from the repository root."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}")
  out = subprocess.run([sys.executable, "-c", code, *map(str, argv)], env=env,
                       capture_output=True, text=True, check=False, cwd=REPO)
  if out.returncode:
    raise RuntimeError(out.stderr[-2000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def compile_and_time(step_fn: Callable, state: Any, data: Any,
                     steps: int) -> tuple[float, float, Any]:
  """(compile seconds, mean milliseconds per step, last metrics) of the engine's step.

  `step_fn(state, data, step, lr_scale)` as `jhseg.train.loop.make_train_step`; one
  warm-up step runs before the timed ones.
  """
  import jax  # pylint: disable=g-import-not-at-top  (children only)
  import numpy as np  # pylint: disable=g-import-not-at-top

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


def wall_times(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True) -> list[float]:
  """Wall seconds of `repeats` calls of `fn()`, after one untimed call (compilation,
  caches) unless `warm_up` is False. `fn` must block until its result is ready."""
  if warm_up:
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def median_seconds(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True) -> float:
  """Median of `wall_times(fn, repeats, warm_up=warm_up)`."""
  return statistics.median(wall_times(fn, repeats, warm_up=warm_up))


def jitted_ms(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> tuple[float, float]:
  """(median, best) milliseconds of a jitted `fn(*args)`, compilation excluded."""
  import jax  # pylint: disable=g-import-not-at-top  (the parent process needs no JAX)
  times = wall_times(lambda: jax.block_until_ready(fn(*args)), repeats)
  return 1e3 * statistics.median(times), 1e3 * min(times)
