"""Ultrametric `tiny` config: model init, train-step compile and step time per encoder width.

    python bench/ultrametric_width.py [--widths 64 32 16] [--devices 1 4] [--steps 10]

Each (device count, width) runs in its own fresh process (the device count is fixed
when JAX starts, and a fresh process keeps one-off JAX start-up costs out of the
first width's compile time). The model, optimizer and step are those of
`experiments/configs/ultrametric.py:tiny` with `config.model.width` overridden, at
the tiny config's batch (8) on 32x32 images like `synthetic_scenes/tiny`, with a
random image and a fixed 3-level target, so only the engine's jitted train step is
measured, not the input pipeline:
- params: parameters of the U-Net;
- init s: `task.make_model` + optimizer creation (random initialisation);
- compile s: `jax.jit(train_step).lower(...).compile()`;
- step ms: mean over `--steps` steps after one warm-up step.
Ratios are against the first width of `--widths` at the same device count.
"""
from __future__ import annotations

import argparse

import step_timing  # bench/step_timing.py, beside this script

CHILD = r"""
import json, os, sys, time
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
sys.path.insert(0, os.getcwd())
from experiments.configs import ultrametric as configs
from jhseg.tasks import get_task
from jhseg.train import devices, optim
from jhseg.train.loop import make_train_step
from bench import step_timing
width, steps = map(int, sys.argv[1:3])
config = configs.get_config("tiny")
config.model.width = width
batch, size = config.data.batch_size, 32
task = get_task(config.task)(config)
mesh = devices.make_data_mesh()
t0 = time.perf_counter()
model = task.make_model(nnx.Rngs(0))
opt = nnx.Optimizer(model, optim.make_optimizer(config.optim, config.num_train_steps),
                    wrt=nnx.Param)
jax.block_until_ready(nnx.state(opt))
init_s = time.perf_counter() - t0
params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
graphdef, state = nnx.split((model, opt))
state = jax.device_put(state, devices.replicated(mesh))
step_fn = jax.jit(make_train_step(graphdef, task, wrt=nnx.Param, seed=0, total_steps=1000),
                  donate_argnums=0)
rng = np.random.default_rng(0)
ucm = np.zeros((batch, 2 * size - 1, 2 * size - 1), np.float32)
ucm[:, :, 31] = 1.0   # an object boundary column (interpixel column 31 = edges 15|16)
ucm[:, 15, :31] = 0.5  # a part boundary row (edges 7|8) in the left object
data = {"image": rng.random((batch, size, size, 3), np.float32), "ucm": ucm,
        "valid": np.ones((batch, size, size), bool)}
data = jax.device_put(data, devices.data_sharding(mesh))
compile_s, step_ms, m = step_timing.compile_and_time(step_fn, state, data, steps)
assert np.isfinite(float(m["loss"])), m
print(json.dumps({"devices": jax.device_count(), "width": width, "params": params,
                  "init_s": init_s, "compile_s": compile_s, "step_ms": step_ms,
                  "loss": float(m["loss"])}))
"""


def run(num_devices: int, width: int, steps: int) -> dict:
  return step_timing.run_child(CHILD, (width, steps), num_devices)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--widths", type=int, nargs="+", default=[64, 32, 16])
  parser.add_argument("--devices", type=int, nargs="+", default=[1, 4])
  parser.add_argument("--steps", type=int, default=10)
  args = parser.parse_args()
  print(f"ultrametric tiny train step (ResNet-18 U-Net, batch 8, 32x32), mean of "
        f"{args.steps} steps; ratios vs width {args.widths[0]}")
  header = (f"{'devices':>7} {'width':>5} {'params':>10} {'init s':>7} {'compile s':>9} "
            f"{'step ms':>8} {'init x':>7} {'compile x':>9} {'step x':>7}")
  print(header)
  print("-" * len(header))
  for num_devices in args.devices:
    base = None
    for width in args.widths:
      r = run(num_devices, width, args.steps)
      base = base or r
      print(f"{r['devices']:>7} {width:>5} {r['params']:>10,} {r['init_s']:>7.2f} "
            f"{r['compile_s']:>9.2f} {r['step_ms']:>8.1f} "
            f"{r['init_s'] / base['init_s']:>7.2f} {r['compile_s'] / base['compile_s']:>9.2f} "
            f"{r['step_ms'] / base['step_ms']:>7.2f}", flush=True)


if __name__ == "__main__":
  main()
