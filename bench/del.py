"""DEL per-image time of each stage on one 321 x 481 image (a BSDS500 test image).

    python bench/del.py [--image PATH.jpg] [--repeats 3] [--widths 64,8]

Stages: SLIC (scikit-image, ~64 px per superpixel), the network (VggDel forward, jitted,
at each width: 64 = VGG16, smaller = CPU width), pooling + adjacency + similarities
(jitted, on the embedding), merging + UCM (host: single linkage on the superpixel graph
and back-projection to pixel edges, plus DEL's Algorithm 1 at T = 0.3 alone). Without
--image a BSDS500 test image from ../shared/data/bsds500 is used when present, else a
smooth synthetic image. Times are medians over `repeats` after one warm-up (compilation
excluded); parameters are random (speed does not depend on them). The host share is
(SLIC + merging + UCM) / total at the CPU width.

The machine is shared (2 cores, several other jobs): the numbers are distorted by the
load and only their order of magnitude and ratios are meaningful.
"""
from __future__ import annotations

import argparse
import glob
import os

import step_timing  # bench/step_timing.py, beside this script

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jhseg import superpixels  # noqa: E402
from jhseg.hierarchy import superpixel_graph  # noqa: E402
from jhseg.models import vgg_del  # noqa: E402
from jhseg.tasks import del_task  # noqa: E402

HEIGHT, WIDTH = 321, 481


def load_image(path: str | None) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if path is None:
    here = os.path.dirname(os.path.abspath(__file__))
    found = sorted(glob.glob(os.path.join(here, "..", "..", "shared", "data", "bsds500", "**",
                                          "images", "test", "*.jpg"), recursive=True))
    path = found[0] if found else None
  if path is None:
    rng = np.random.default_rng(0)
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    image = ndimage.gaussian_filter(rng.random((HEIGHT, WIDTH, 3)), (6, 6, 0))
    return ((image - image.min()) / np.ptp(image)).astype(np.float32)
  image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
  if image.shape[0] > image.shape[1]:
    image = np.transpose(image, (1, 0, 2))
  print(f"image: {path}")
  return image


def numpy_initialised(width: int) -> vgg_del.VggDel:
  """Random parameters from NumPy (avoids compiling one JAX RNG program per shape)."""
  model = nnx.eval_shape(lambda: vgg_del.VggDel(width=width, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  for _, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Param):
      fan_in = int(np.prod(variable.shape[:-1])) if len(variable.shape) > 1 else 1
      variable.set_value(jnp.asarray(rng.normal(size=variable.shape) / np.sqrt(fan_in),
                                     jnp.float32))
  return model


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image", default=None)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--widths", default="64,8")
  args = parser.parse_args()
  image = load_image(args.image)
  height, width = image.shape[:2]
  rows = {}

  labels = superpixels.slic_superpixels(image)
  rows["SLIC"] = step_timing.median_seconds(lambda: superpixels.slic_superpixels(image), args.repeats)
  num = int(labels.max()) + 1
  max_sp = int(np.ceil(num / 64) * 64)
  print(f"{height}x{width}: {num} superpixels ({height * width / num:.1f} px each)")

  images = jnp.asarray(image[None])
  sp = jnp.asarray(labels[None])
  pool = jax.jit(lambda e, s: del_task.superpixel_graph_of(e, s, max_sp))
  network_rows = []
  for w in (int(x) for x in args.widths.split(",")):
    model = numpy_initialised(w)
    forward = nnx.jit(lambda m, x: m(x))
    rows[f"network (width {w})"] = step_timing.median_seconds(
        lambda: jax.block_until_ready(forward(model, images)), args.repeats)
    network_rows.append(f"network (width {w})")
    embedding = forward(model, images)
  rows["pooling + adjacency + d"] = step_timing.median_seconds(
      lambda: jax.block_until_ready(pool(embedding, sp)), args.repeats)
  _, pairs, mask, d = jax.device_get(pool(embedding, sp))
  pairs, mask, f = pairs[0], mask[0], 1.0 - d[0]
  print(f"adjacent pairs: {int(mask.sum())}")
  rows["merging + UCM (single linkage)"] = step_timing.median_seconds(
      lambda: superpixel_graph.ucm_from_superpixel_graph(labels, pairs, f, mask=mask,
                                                         num_superpixels=num), args.repeats)
  rows["Algorithm 1 alone (T=0.3, min 2)"] = step_timing.median_seconds(
      lambda: superpixel_graph.merge_superpixels(num, pairs, f, mask=mask, threshold=0.3,
                                                 min_size=2), args.repeats)
  for name, seconds in rows.items():
    print(f"{name:36s} {1000 * seconds:9.1f} ms")
  cpu_network = network_rows[-1]
  host = rows["SLIC"] + rows["merging + UCM (single linkage)"]
  total = host + rows[cpu_network] + rows["pooling + adjacency + d"]
  print(f"host share at {cpu_network}: {100 * host / total:.0f}% of {1000 * total:.0f} ms")
  print("(shared, loaded CPU: times are distorted by the other jobs)")


if __name__ == "__main__":
  main()
