"""Ultrametric U-Net speed: training step and inference at 321x481, with the post-processing share.

    python bench/ultrametric.py [--depths 50 18] [--batch 1] [--repeats 3] [--image PATH]

For each encoder depth, on the default JAX backend (CPU here):
- train: one jitted step of the task's loss (eq. 1) with its gradient and an Adam
  update, images/s;
- network: the jitted forward pass and the dissimilarity of eq. (2), images/s;
- inference: network + the UCM post-processing (watershed, average linkage,
  removal of regions < 30 px) through the host callback inside the same jit, as the
  task's evaluation runs it, images/s;
- post-processing share: (inference time - network time) / inference time;
- host UCM: the NumPy post-processing alone on the same dissimilarity, s/image.
Times are medians over `--repeats` calls after one compiling call. The input is
a BSDS500 sample image (../shared/data/bsds500_bench) when present, otherwise
smooth random noise; the network is randomly initialised (the paper's ResNet-50
is ImageNet-initialised), so the superpixel count -- and the post-processing cost
-- is that of an untrained model, which tends to over-segment (an upper bound).
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from jhseg import hierarchy
from jhseg.tasks import ultrametric

HEIGHT, WIDTH = 321, 481
LEVELS = (0.0, 0.5, 1.0)
SAMPLE_IMAGES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "bsds500_bench" / "images"


def _image(path: str | None) -> np.ndarray:
  """(321, 481, 3) float32 image in [0, 1]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  candidates = [pathlib.Path(path)] if path else sorted(SAMPLE_IMAGES.glob("*.jpg"))
  for candidate in candidates:
    if candidate.is_file():
      image = np.asarray(Image.open(candidate).convert("RGB"), np.float32) / 255.0
      if image.shape[:2] == (WIDTH, HEIGHT):
        image = image.transpose(1, 0, 2)
      if image.shape[:2] == (HEIGHT, WIDTH):
        return image
  rng = np.random.default_rng(0)
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  noise = ndimage.gaussian_filter(rng.random((HEIGHT, WIDTH, 3)), (4, 4, 0))
  return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _task(depth: int) -> ultrametric.UltrametricUNet:
  config = ml_collections.ConfigDict({"model": {"levels": LEVELS, "depth": depth,
                                                "decoder_features": (256, 128, 64, 32, 16),
                                                "pretrained": ""}})
  return ultrametric.UltrametricUNet(config)


def bench_depth(depth: int, batch: int, repeats: int, image: np.ndarray) -> dict[str, float]:
  task = _task(depth)
  model = task.make_model(nnx.Rngs(0))
  images = jnp.asarray(np.repeat(image[None], batch, 0))
  valid = jnp.ones((batch, HEIGHT, WIDTH), bool)
  target = np.zeros((batch, 2 * HEIGHT - 1, 2 * WIDTH - 1), np.float32)
  target[:, 0::2, 1::2][:, :, WIDTH // 2] = 1.0  # some boundary edges, so β is not degenerate
  data = {"image": images, "ucm": jnp.asarray(target), "valid": valid}

  optimizer = nnx.Optimizer(model, optax.adam(1e-4), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, data):
    loss, grads = nnx.value_and_grad(lambda m: task.loss(m, data, jax.random.key(0))[0])(model)
    optimizer.update(model, grads)
    return loss

  model.train()
  train = _median_seconds(lambda: train_step(model, optimizer, data), repeats)

  model.eval()

  @nnx.jit
  def network(model, images):
    return ultrametric.dissimilarity(model(images), LEVELS)

  @nnx.jit
  def inference(model, images, valid):
    h, v = ultrametric.dissimilarity(model(images), LEVELS)
    return ultrametric.predicted_ucm(h, v, valid, min_region_area=30, linkage="average",
                                     mesh=None)

  net = _median_seconds(lambda: network(model, images), repeats)
  full = _median_seconds(lambda: inference(model, images, valid), repeats)
  h, v = (np.asarray(x[0]) for x in network(model, images))
  start = time.perf_counter()
  ucm_h, _ = hierarchy.ucm_from_dissimilarity(h, v, min_region_area=30)
  host = time.perf_counter() - start
  return {"depth": depth, "train": batch / train, "network": batch / net,
          "inference": batch / full, "share": (full - net) / full, "host_ucm": host,
          "levels": len(np.unique(ucm_h))}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--depths", type=int, nargs="+", default=[50, 18])
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--image", default=None, help="a 321x481 (or 481x321) image")
  args = parser.parse_args(argv)
  image = _image(args.image)
  print(f"Ultrametric U-Net at {HEIGHT}x{WIDTH}, batch {args.batch}, backend "
        f"{jax.default_backend()} ({jax.device_count()} devices), median of {args.repeats}")
  header = (f"{'encoder':>10} {'train img/s':>12} {'network img/s':>14} {'inference img/s':>16} "
            f"{'post-proc share':>16} {'host UCM s/img':>15} {'UCM levels':>11}")
  print(header)
  print("-" * len(header))
  for depth in args.depths:
    r = bench_depth(depth, args.batch, args.repeats, image)
    print(f"{'ResNet-' + str(depth):>10} {r['train']:>12.3f} {r['network']:>14.3f} "
          f"{r['inference']:>16.3f} {r['share']:>15.1%} {r['host_ucm']:>15.3f} "
          f"{r['levels']:>11d}", flush=True)


if __name__ == "__main__":
  main()
