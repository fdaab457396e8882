"""Train-step compile time and step time on 1 and 4 (fake) CPU devices.

    python bench/train_step.py [--steps 20] [--batch 16] [--size 64]

Each device count runs in its own process (the count is fixed when JAX
starts). The task is the engine's pixel_classification model on random
images, so only the engine's step is measured, not the input pipeline.
Ratios are against the 1-device run of the same invocation.
"""
from __future__ import annotations

import argparse

import step_timing  # bench/step_timing.py, beside this script

CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
sys.path.insert(0, os.getcwd())
from experiments.configs import pixel_classification
from jhseg.tasks import get_task
from jhseg.train import devices, optim
from jhseg.train.loop import make_train_step
from bench import step_timing
steps, batch, size = map(int, sys.argv[1:4])
config = pixel_classification.get_config()
task = get_task(config.task)(config)
mesh = devices.make_data_mesh()
model = task.make_model(nnx.Rngs(0))
opt = nnx.Optimizer(model, optim.make_optimizer(config.optim, 1000), wrt=nnx.Param)
graphdef, state = nnx.split((model, opt))
state = jax.device_put(state, devices.replicated(mesh))
step_fn = jax.jit(make_train_step(graphdef, task, wrt=nnx.Param, seed=0, total_steps=1000),
                  donate_argnums=0)
rng = np.random.default_rng(0)
data = {"image": rng.random((batch, size, size, 3), np.float32),
        "labels": rng.integers(0, 5, (batch, size, size)).astype(np.int32)}
data = jax.device_put(data, devices.data_sharding(mesh))
compile_s, step_ms, m = step_timing.compile_and_time(step_fn, state, data, steps)
print(json.dumps({"devices": jax.device_count(), "compile_s": compile_s,
                  "step_ms": step_ms}))
"""


def run(num_devices: int, args) -> dict:
  return step_timing.run_child(CHILD, (args.steps, args.batch, args.size), num_devices)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--size", type=int, default=64)
  args = parser.parse_args()
  rows = [run(n, args) for n in (1, 4)]
  base = rows[0]["step_ms"]
  print(f"pixel_classification train step, global batch {args.batch}, {args.size}x{args.size}")
  print(f"{'devices':>8} {'compile s':>10} {'step ms':>9} {'vs 1 device':>12}")
  for r in rows:
    print(f"{r['devices']:>8} {r['compile_s']:>10.2f} {r['step_ms']:>9.1f} "
          f"{r['step_ms'] / base:>11.2f}x")


if __name__ == "__main__":
  main()
