"""DEL per-image time of each stage on one 321 x 481 image (a BSDS500 test image), the
merging + UCM step before/after its vectorisation, and SLIC implementations compared.

    python bench/del.py [--image PATH.jpg] [--repeats 3] [--widths 64,8] [--slic-images 5]

Stages: SLIC (scikit-image, ~64 px per superpixel), the network (VggDel forward, jitted,
at each width: 64 = VGG16, smaller = CPU width), pooling + adjacency + similarities
(jitted, on the embedding), merging + UCM (host: single linkage on the superpixel graph
and back-projection to pixel edges, plus DEL's Algorithm 1 at T = 0.3 alone). Without
--image a BSDS500 test image from ../shared/data/bsds500 is used when present, else a
smooth synthetic image. Times are medians over `repeats` after one warm-up (compilation
excluded); parameters are random (speed does not depend on them). The host share is
(SLIC + merging + UCM) / total at the CPU width.

Merging + UCM, before/after (same run, same graph): "before" is the previous code, kept
here -- Algorithm 1 joining pair by pair in Python, and the UCM querying the LCA of every
boundary pixel edge after a SciPy connectivity check; "after" is
`jhseg.hierarchy.superpixel_graph` (first pass as connected components, Python loop only
over pairs touching a small component; one LCA query per graph pair looked up by key per
pixel edge; connectivity checked only when Higra refuses the graph).

SLIC comparison on the first `--slic-images` BSDS500 test images (all annotators): jhseg's
SLIC (scikit-image) vs OpenCV-contrib's `ximgproc` SLIC and SLICO at region size 8 (~64 px),
10 iterations, connectivity enforced -- superpixel count, boundary recall (share of the
human boundary pixels within 2 px of a superpixel boundary) and undersegmentation error
(Neubert & Protzel 2012: sum over segments and overlapping superpixels of
min(inside, outside) / pixels), median wall and process-CPU time per image.

Host steps are also timed in thread CPU time (`time.thread_time`), which the other jobs
on the machine barely change; wall times of milliseconds vary 2-5x with the load.

The machine is shared (2 cores, several other jobs): the numbers are distorted by the
load and only their order of magnitude and ratios are meaningful.
"""
from __future__ import annotations

import argparse
import glob
import os
import time

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
BSDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                    "bsds500")


def load_image(path: str | None) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if path is None:
    found = test_images()
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


def test_images() -> list[str]:
  return sorted(glob.glob(os.path.join(BSDS, "**", "images", "test", "*.jpg"), recursive=True))


# ----------------------------------------------------------------------------- before (kept)


def previous_algorithm1(num, pairs, f, *, mask, threshold, min_size):
  """The previous merge_superpixels: both passes pair by pair in Python."""
  pairs, f = pairs[mask].tolist(), f[mask].tolist()
  parent, size = list(range(num)), [1] * num

  def find(x):
    while parent[x] != x:
      parent[x] = parent[parent[x]]
      x = parent[x]
    return x

  for (i, j), fij in zip(pairs, f):
    a, b = find(i), find(j)
    if a != b and fij <= threshold:
      parent[a], size[b] = b, size[a] + size[b]
  for i, j in pairs:
    a, b = find(i), find(j)
    if a != b and (size[a] < min_size or size[b] < min_size):
      parent[a], size[b] = b, size[a] + size[b]
  return np.unique([find(i) for i in range(num)], return_inverse=True)[1]


def previous_ucm(labels, pairs, f, *, mask, num):
  """The previous ucm_from_superpixel_graph: SciPy connectivity check, LCA per pixel edge."""
  import higra as hg  # pylint: disable=g-import-not-at-top
  from scipy import sparse  # pylint: disable=g-import-not-at-top
  from scipy.sparse import csgraph  # pylint: disable=g-import-not-at-top
  pairs, f = pairs[mask].astype(np.int64), f[mask].astype(np.float64)
  adjacency = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                                shape=(num, num))
  assert csgraph.connected_components(adjacency, directed=False)[0] == 1
  graph = hg.UndirectedGraph(num)
  graph.add_edges(pairs[:, 0], pairs[:, 1])
  tree, altitudes = hg.bpt_canonical(graph, f)
  lca = hg.make_lca_fast(tree)

  def project(first, second):
    out = np.zeros(first.shape, np.float32)
    edge = (first != second) & (first >= 0) & (second >= 0)
    out[edge] = altitudes[lca.lca(first[edge].astype(np.int64), second[edge].astype(np.int64))]
    return out

  return project(labels[:, :-1], labels[:, 1:]), project(labels[:-1], labels[1:])


# ----------------------------------------------------------------------------- SLIC


def opencv_slic(image: np.ndarray, algorithm: str) -> np.ndarray:
  import cv2  # pylint: disable=g-import-not-at-top
  lab = cv2.cvtColor((np.clip(image, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2LAB)
  slic = cv2.ximgproc.createSuperpixelSLIC(lab, algorithm=getattr(cv2.ximgproc, algorithm),
                                           region_size=8, ruler=10.0)
  slic.iterate(10)
  slic.enforceLabelConnectivity(25)
  return superpixels.relabel_consecutive(slic.getLabels())


def boundary_recall(labels: np.ndarray, truth_boundaries, tolerance: int = 2) -> float:
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  edge = np.zeros(labels.shape, bool)
  edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
  edge[:-1] |= labels[:-1] != labels[1:]
  near = ndimage.binary_dilation(edge, np.ones((2 * tolerance + 1,) * 2, bool))
  return float(np.mean([near[b].mean() for b in truth_boundaries]))


def undersegmentation_error(labels: np.ndarray, truths) -> float:
  num = int(labels.max()) + 1
  errors = []
  for truth in truths:
    joint = np.bincount(truth.ravel().astype(np.int64) * num + labels.ravel(),
                        minlength=(int(truth.max()) + 1) * num).reshape(-1, num)
    outside = joint.sum(axis=0)[None] - joint
    errors.append(np.minimum(joint, outside)[joint > 0].sum() / labels.size)
  return float(np.mean(errors))


def compare_slic(num_images: int, repeats: int) -> None:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from jhseg.metrics import bsds_io  # pylint: disable=g-import-not-at-top
  paths = test_images()[:num_images]
  if not paths:
    print("SLIC comparison skipped: no BSDS500 test images under", BSDS)
    return
  methods = {"jhseg (scikit-image)": superpixels.slic_superpixels,
             "OpenCV SLIC": lambda im: opencv_slic(im, "SLIC"),
             "OpenCV SLICO": lambda im: opencv_slic(im, "SLICO")}
  print(f"\nSLIC on {len(paths)} BSDS500 test images (all annotators):")
  print(f"{'method':22s} {'count':>6s} {'BR@2px':>7s} {'UE':>6s} {'wall ms':>8s} "
        f"{'CPU ms':>7s}")
  for name, method in methods.items():
    counts, recalls, errors, seconds, cpu = [], [], [], [], []
    for path in paths:
      image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
      truth = bsds_io.load_ground_truth(path.replace("images", "groundTruth")[:-4] + ".mat")
      labels = method(image)
      seconds.append(step_timing.median_seconds(lambda: method(image), repeats))
      cpu.append(process_cpu_seconds(lambda: method(image), repeats))
      counts.append(labels.max() + 1)
      recalls.append(boundary_recall(labels, truth.boundaries))
      errors.append(undersegmentation_error(labels, truth.segmentations))
    print(f"{name:22s} {np.mean(counts):6.0f} {np.mean(recalls):7.3f} {np.mean(errors):6.3f} "
          f"{1000 * np.median(seconds):8.0f} {1000 * np.median(cpu):7.0f}")


def thread_cpu_seconds(fn, repeats: int) -> float:
  """Median CPU time of this thread over `repeats` calls after one warm-up: unlike wall
  time it hardly moves with the other jobs' load (single-threaded NumPy/Higra steps)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.thread_time()
    fn()
    times.append(time.thread_time() - start)
  return float(np.median(times))


def process_cpu_seconds(fn, repeats: int) -> float:
  """Median CPU time of the whole process (all threads: OpenCV may use several) per call."""
  times = []
  for _ in range(repeats):
    start = time.process_time()
    fn()
    times.append(time.process_time() - start)
  return float(np.median(times))


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
  parser.add_argument("--slic-images", type=int, default=5)
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
  new_ucm = superpixel_graph.ucm_from_superpixel_graph(labels, pairs, f, mask=mask,
                                                       num_superpixels=num)
  assert all(np.array_equal(a, b) for a, b in zip(new_ucm, previous_ucm(labels, pairs, f,
                                                                         mask=mask, num=num)))
  repeats = max(args.repeats, 15)  # milliseconds: more repeats for a stable median
  edges = superpixel_graph.boundary_edges(labels)
  host_steps = {
      "UCM, before": lambda: previous_ucm(labels, pairs, f, mask=mask, num=num),
      "UCM, after (from scratch)": lambda: superpixel_graph.ucm_from_superpixel_graph(
          labels, pairs, f, mask=mask, num_superpixels=num),
      "  boundary_edges (once per image)": lambda: superpixel_graph.boundary_edges(labels),
      "  UCM given boundary_edges": lambda: superpixel_graph.ucm_from_superpixel_graph(
          labels, pairs, f, mask=mask, num_superpixels=num, edges=edges),
      "Algorithm 1 (T=0.3, min 2), before": lambda: previous_algorithm1(
          num, pairs, f, mask=mask, threshold=0.3, min_size=2),
      "Algorithm 1 (T=0.3, min 2), after": lambda: superpixel_graph.merge_superpixels(
          num, pairs, f, mask=mask, threshold=0.3, min_size=2),
  }
  host_cpu = {}
  for name, step in host_steps.items():
    rows[name] = step_timing.median_seconds(step, repeats)
    host_cpu[name] = thread_cpu_seconds(step, repeats)
  print(f"{'stage':36s} {'wall':>9s} {'thread CPU':>11s}")
  for name, seconds in rows.items():
    cpu = f"{1000 * host_cpu[name]:8.1f} ms" if name in host_cpu else ""
    print(f"{name:36s} {1000 * seconds:6.1f} ms {cpu:>11s}")
  rows["merging + UCM (single linkage)"] = rows["UCM, after (from scratch)"]
  cpu_network = network_rows[-1]
  host = rows["SLIC"] + rows["merging + UCM (single linkage)"]
  total = host + rows[cpu_network] + rows["pooling + adjacency + d"]
  print(f"host share at {cpu_network}: {100 * host / total:.0f}% of {1000 * total:.0f} ms")
  print("(shared, loaded CPU: times are distorted by the other jobs)")
  if args.slic_images:
    compare_slic(args.slic_images, args.repeats)


if __name__ == "__main__":
  main()
