"""Train-step compile time and step time on 1 and 4 (fake) CPU devices; ResNet-50 vs torch.

    python bench/train_step.py [--steps 20] [--batch 16] [--size 64]
    python bench/train_step.py --torch [--repeats 5] [--cases train_os32,train_os8]
    python bench/train_step.py --torch-only      # only the torch table

Device table: each device count runs in its own process (the count is fixed when
JAX starts). The task is the engine's pixel_classification model on random
images, so only the engine's step is measured, not the input pipeline.
Ratios are against the 1-device run of the same invocation.

Torch table (issue #9, point 11): the parity test's torch ResNet-50
(tests/test_torchvision_import.py) and `jhseg.models.resnet.ResNet` holding the
same weights (imported with `jhseg.models.torchvision_import`), torch on 2
threads, XLA on the process's cores: eval forward at 224^2 batch 8, and a train
step (forward with batch statistics, softmax cross-entropy on the 10-class head,
backward, SGD with momentum 0.9) at 321x481, batch 2 at output stride 32 and
batch 1 at output stride 8 (dilated layer3/layer4). Each case runs in its own
process; the two frameworks alternate `--repeats` times and the medians are
printed with the ratio torch ms / jhseg ms (> 1: jhseg faster). Extra XLA flags
can be tried through the XLA_FLAGS environment variable (printed with the table).

Measured 2026-11-30 on the shared 2-core AMD EPYC (AVX2), load average 9-16 from
other jobs, so absolute times are 10-30x too slow and noisy; compare the ratios.
`python bench/train_step.py --torch-only --repeats 3`:

  case          before (1x1 as convolution)   after (1x1 as dot, default)
  forward_224   -                             3822 vs 7408 ms  1.94x
  train_os32    44229 vs 21853 ms  0.49x      16782 vs 19209 ms  1.14x
  train_os8     39738 vs 16329 ms  0.41x      21414 vs 26123 ms  1.22x
  (jhseg ms vs torch ms, torch/jhseg; issue's idle-machine numbers before:
   forward 1.0x, train 0.49x and 0.36x)

Where XLA:CPU lost (per-convolution timings at the ResNet-50 shapes, forward /
input gradient / weight gradient, jax.jit vs torch.nn.functional.conv2d and
torch.nn.grad, 3 alternating runs): this jaxlib (0.10.2) hands convolutions to
YNNPACK (`__ynn_fusion` in the optimised HLO). Its 1x1 convolutions are slow,
above all the weight gradient, which XLA expresses as a convolution whose
"batch" is the input channels and whose window is the whole feature map:
layer4's 2048->512 1x1 at 41x61: 4668 vs 586 ms (0.13x); 512->2048: 8328 vs
303 ms (0.04x). The dilated 3x3 convolutions were not the problem (layer3,
dilation 2: forward 1.14x, input gradient 1.34x, weight gradient 0.76x).
`jhseg.models.resnet.pointwise_conv` computes every 1x1 convolution as a strided
slice and a dot (same sums; parity tests pass): 2048->512 weight gradient
274 vs 332 ms (1.21x), 512->2048 463 vs 300 ms (0.65x).

Also tried:
  - XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
    (Eigen convolutions instead of YNNPACK): before the dot change 0.83x -> 1.55x
    (OS32) and 0.41x -> 1.12x (OS8) in single runs; with it, 1.60x (OS32) and 1.06x
    (OS8) against 1.14x and 1.22x without: no consistent gain once 1x1 convolutions
    are dots, and it makes small 3x3 convolutions' weight gradient slower (layer1
    3x3: 0.53x vs 1.30x), so it is not made a default. `jax.jit(...,
    compiler_options=...)` accepts only whole enum names for this field.
  - XLA_FLAGS=--xla_cpu_use_onednn=true: no change of the slow 1x1 weight gradient
    (0.11x).
  - The stem's 7x7 stride-2 weight gradient stays slow (0.25x-0.6x; ~260 ms per
    321x481 image under this load, a small share of the step); an im2col dot
    would be the next step. Not tried for lack of time: remat, bf16, layouts
    other than NHWC, `jax.default_matmul_precision` (float32 on CPU already).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

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


# ------------------------------------------------------------------ torch comparison
# (name, what, batch, height, width, output stride): the runs of issue #9, point 11.
TORCH_CASES = {
    "forward_224": ("forward", 8, 224, 224, 32),
    "train_os32": ("train", 2, 321, 481, 32),
    "train_os8": ("train", 1, 321, 481, 8),
}

TORCH_CHILD = r"""
import os, sys
sys.path[:0] = [os.getcwd(), os.path.join(os.getcwd(), "bench")]
import train_step
train_step.torch_comparison_child(sys.argv[1], int(sys.argv[2]))
"""


def _torch_and_jhseg_resnet50(output_stride: int, workdir: str):
  """The parity test's torch ResNet-50 and the jhseg one holding the same weights."""
  import torch  # pylint: disable=g-import-not-at-top  (children only)
  from jhseg.models import resnet, torchvision_import  # pylint: disable=g-import-not-at-top
  from tests.test_torchvision_import import _torch_reference  # pylint: disable=g-import-not-at-top
  _, reference = _torch_reference(50, 10, resnet.OUTPUT_STRIDES[output_stride])
  path = os.path.join(workdir, "resnet50.pth")
  torch.save(reference.state_dict(), path)
  model = torchvision_import.resnet_from_torchvision(
      path, depth=50, output_stride=output_stride, num_classes=10)
  return reference, model


def _jhseg_runner(model, kind: str, images, labels):
  """A no-argument call running one jitted forward or train step (SGD, momentum 0.9)."""
  import jax  # pylint: disable=g-import-not-at-top  (children only)
  import optax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  if kind == "forward":
    model.eval()
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))
    return lambda: jax.block_until_ready(forward(state, images))
  model.train()  # BatchNorm on batch statistics, as torch's model.train()
  optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))

  def step(state, images, labels):
    model, optimizer = nnx.merge(graphdef, state)
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(
        m(images), labels).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss

  compiled = jax.jit(step, donate_argnums=0).lower(state, images, labels).compile()
  box = [state]

  def run():
    box[0], loss = compiled(box[0], images, labels)
    return jax.block_until_ready(loss)
  return run


def _torch_runner(model, kind: str, images, labels):
  import torch  # pylint: disable=g-import-not-at-top  (children only)
  if kind == "forward":
    model.eval()

    def forward():
      with torch.no_grad():
        return model(images)
    return forward
  model.train()
  optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(images)[0], labels)
    loss.backward()
    optimizer.step()
    return loss
  return step


def torch_comparison_child(case: str, repeats: int) -> None:
  """Prints one JSON line: median ms of jhseg and torch on `case`, timed alternately."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(2)
  kind, batch, height, width, output_stride = TORCH_CASES[case]
  with tempfile.TemporaryDirectory() as workdir:
    reference, model = _torch_and_jhseg_resnet50(output_stride, workdir)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, 3, height, width)).astype(np.float32)
  labels = rng.integers(0, 10, batch)
  t0 = time.perf_counter()
  run_jhseg = _jhseg_runner(model, kind, jnp.asarray(images.transpose(0, 2, 3, 1)),
                            jnp.asarray(labels))
  run_jhseg()  # compiles the forward; warms up the step
  compile_s = time.perf_counter() - t0
  run_torch = _torch_runner(reference, kind, torch.from_numpy(images),
                            torch.from_numpy(labels))
  run_torch()
  times = {"jhseg": [], "torch": []}
  for _ in range(repeats):  # alternate, so both see the same load of the machine
    for name, run in (("jhseg", run_jhseg), ("torch", run_torch)):
      start = time.perf_counter()
      run()
      times[name].append(1e3 * (time.perf_counter() - start))
  print(json.dumps({"case": case, "compile_s": compile_s,
                    **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
                    **{f"{k}_all_ms": v for k, v in times.items()}}))


def run_torch_case(case: str, repeats: int) -> dict:
  # One process per case: XLA keeps each compiled ResNet-50 and its buffers alive.
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", TORCH_CHILD, case, str(repeats)], env=env,
                       capture_output=True, text=True, check=False, cwd=step_timing.REPO)
  if out.returncode:
    raise RuntimeError(out.stderr[-3000:])
  return json.loads(out.stdout.strip().splitlines()[-1])


def print_torch_table(cases: list[str], repeats: int) -> None:
  rows = [run_torch_case(case, repeats) for case in cases]
  print(f"\nResNet-50, same weights: jhseg (XLA, {os.cpu_count()} cores) vs torch "
        f"(2 threads); median of {repeats} alternating runs")
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"{'case':>12} {'batch':>5} {'size':>8} {'OS':>3} {'jhseg ms':>9} {'torch ms':>9} "
        f"{'torch/jhseg':>12} {'compile s':>10}")
  for r in rows:
    _, batch, height, width, output_stride = TORCH_CASES[r["case"]]
    print(f"{r['case']:>12} {batch:>5} {f'{height}x{width}':>8} {output_stride:>3} "
          f"{r['jhseg_ms']:>9.0f} {r['torch_ms']:>9.0f} "
          f"{r['torch_ms'] / r['jhseg_ms']:>11.2f}x {r['compile_s']:>10.1f}")
  print("torch/jhseg > 1: jhseg is faster. On a shared machine the absolute times move "
        "with the load; the ratio of alternating runs is what to compare.")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--torch", action="store_true",
                      help="also compare a ResNet-50 with torch (several minutes)")
  parser.add_argument("--torch-only", action="store_true",
                      help="only the torch comparison, not the device table")
  parser.add_argument("--cases", default=",".join(TORCH_CASES),
                      help=f"torch comparison cases, of {sorted(TORCH_CASES)}")
  parser.add_argument("--repeats", type=int, default=5,
                      help="alternating timed runs per framework and case")
  args = parser.parse_args()
  cases = args.cases.split(",")
  for case in cases:
    if case not in TORCH_CASES:
      parser.error(f"--cases: unknown case {case!r}; valid: {sorted(TORCH_CASES)}")
  if not args.torch_only:
    print_device_table(args)
  if args.torch or args.torch_only:
    print_torch_table(cases, args.repeats)


def print_device_table(args) -> None:
  rows = [run(n, args) for n in (1, 4)]
  base = rows[0]["step_ms"]
  print(f"pixel_classification train step, global batch {args.batch}, {args.size}x{args.size}")
  print(f"{'devices':>8} {'compile s':>10} {'step ms':>9} {'vs 1 device':>12}")
  for r in rows:
    print(f"{r['devices']:>8} {r['compile_s']:>10.2f} {r['step_ms']:>9.1f} "
          f"{r['step_ms'] / base:>11.2f}x")


if __name__ == "__main__":
  main()
