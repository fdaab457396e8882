"""HiPoSeg's training overhead and its (zero) inference overhead, against the baseline.

    python bench/hiposeg.py [--config pascal_part_108_tiny] [--size 96] [--batch 4] [--steps 10]

Builds the DeepLabV3+ of `experiments/configs/hiposeg.py:<config>` twice from the same
NumPy-random weights -- the baseline (`loss.hiposeg=False`) and HiPoSeg (head + memories)
-- and times (1) the engine's jitted train step (`jhseg.train.loop.make_train_step`,
compilation excluded, all loss phases on: the step at the end of training) and (2) the
jitted inference forward `model(images)`, which for HiPoSeg runs DeepLabV3+ alone
(timed alternately with the baseline's), and reports XLA's flop count of each program
(load-independent).
Inputs are random images with blocky random part labels of the config's label tree;
speed does not depend on the values. Prints a table with the HiPoSeg / baseline ratio
and the prototype losses' share of the HiPoSeg step.

The machine is shared (2 cores, several other jobs): the numbers are distorted by the
load; only the ratios are meaningful, and those only roughly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import step_timing  # bench/step_timing.py, beside this script

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, step_timing.REPO)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jhseg.tasks import hiposeg  # noqa: E402
from jhseg.train import loop, optim  # noqa: E402

configs = importlib.import_module("experiments.configs.hiposeg")


def numpy_initialised(task: hiposeg.HiPoSeg) -> nnx.Module:
  """The task's model with NumPy-random weights (no JAX RNG program per shape)."""
  model = nnx.eval_shape(lambda: task.make_model(nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Variable):
      if isinstance(variable, nnx.Param) and len(variable.shape) > 1:
        value = rng.normal(size=variable.shape) / np.sqrt(np.prod(variable.shape[:-1]))
      elif path[-1] in ("scale", "var"):
        value = np.ones(variable.shape)
      else:
        value = np.zeros(variable.shape)
      variable.set_value(jnp.asarray(value, variable.dtype))
  return model


def batch_of(task: hiposeg.HiPoSeg, size: int, batch: int) -> dict:
  rng = np.random.default_rng(0)
  blocks = rng.integers(0, task.tree.num_classes(0), (batch, size // 8, size // 8))
  parts = np.repeat(np.repeat(blocks, 8, 1), 8, 2).astype(np.int32)
  levels = np.stack([task.tree.fine_to_level(l)[parts] for l in range(task.tree.num_levels)], 1)
  return {"image": jnp.asarray(rng.random((batch, size, size, 3)), jnp.float32),
          "labels": jnp.asarray(levels)}


def _flops(lowered) -> float:
  cost = lowered.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


def time_training(config, data, steps: int) -> tuple[dict[str, float], nnx.Module]:
  """Compile and step times of the engine's train step, its flops, and the trained model."""
  task = hiposeg.HiPoSeg(config)
  model = numpy_initialised(task)
  total = int(config.num_train_steps)
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config.optim, total), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step_fn = jax.jit(loop.make_train_step(graphdef, task, wrt=nnx.Param, seed=0,
                                         total_steps=total))
  flops = _flops(step_fn.lower(state, data, np.int32(1), np.float32(1)))
  compile_s, train_ms, _ = step_timing.compile_and_time(step_fn, state, data, steps)
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  return {"compile_s": compile_s, "train_ms": train_ms, "train_gflop": flops / 1e9}, model


def time_inference(models: dict, images, repeats: int) -> dict[str, dict[str, float]]:
  """Median forward times, measured alternately (the load drifts), and forward flops."""
  forward = nnx.jit(lambda m, x: m(x))
  results = {name: {"infer_gflop": _flops(forward.lower(m, images)) / 1e9}
             for name, m in models.items()}
  times = {name: [] for name in models}
  for name, m in models.items():
    jax.block_until_ready(forward(m, images))  # compile
  for _ in range(repeats):
    for name, m in models.items():
      times[name].append(step_timing.median_seconds(
          lambda m=m: jax.block_until_ready(forward(m, images)), 1, warm_up=False))
  for name in models:
    results[name]["infer_ms"] = 1000 * float(np.median(times[name]))
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="pascal_part_108_tiny")
  parser.add_argument("--size", type=int, default=96)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  results, models = {}, {}
  for name, on in (("baseline", False), ("hiposeg", True)):
    config = configs.get_config(args.config)
    config.loss.hiposeg = on
    config.num_train_steps = 1  # step >= every switch: all HiPoSeg terms are on
    data = batch_of(hiposeg.HiPoSeg(config), args.size, args.batch)
    results[name], models[name] = time_training(config, data, args.steps)
  for name, values in time_inference(models, data["image"], 2 * args.steps).items():
    results[name].update(values)
  base, ours = results["baseline"], results["hiposeg"]
  print(f"config {args.config}, {args.batch} x {args.size}^2, {jax.device_count()} device(s), "
        f"{args.steps} timed steps (shared machine: rough numbers)")
  print(f"{'':22}{'baseline':>10}{'HiPoSeg':>10}{'ratio':>8}")
  for key, label in (("train_ms", "train step (ms)"), ("train_gflop", "train step (GFLOP)"),
                     ("infer_ms", "inference (ms)"), ("infer_gflop", "inference (GFLOP)"),
                     ("compile_s", "compile train (s)")):
    print(f"{label:22}{base[key]:10.2f}{ours[key]:10.2f}{ours[key] / base[key]:8.3f}")
  share = (ours["train_ms"] - base["train_ms"]) / ours["train_ms"]
  flop_share = (ours["train_gflop"] - base["train_gflop"]) / ours["train_gflop"]
  print(f"prototype losses' share of the HiPoSeg train step: {100 * share:.1f}% of the time, "
        f"{100 * flop_share:.1f}% of the flops (target < 15%)")


if __name__ == "__main__":
  main()
