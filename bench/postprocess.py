"""Post-processing time per 321 x 481 prediction (Ultrametric U-Net: watershed ->
average linkage -> 30 px area filter -> UCM), target < 100 ms.

    python bench/postprocess.py [--repeats 10] [--batch 8] [--min-area 30]

The dissimilarity is a smooth random field (Gaussian-filtered noise plus a few
sharp random "object" boundaries), mapped to pixel edges with the 'mean' reduction,
so the watershed yields a realistic few hundred to thousand superpixels. Times are
medians over `repeats`; ratios are against the watershed alone in the same run.
The last rows run the batched host callback under jax.jit with 1 and 4 fake CPU
devices (shard_map over 'data'); on this machine 4 fake devices share 2 cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from jhseg import hierarchy as hy  # noqa: E402

HEIGHT, WIDTH = 321, 481


def smooth_boundary_map(seed: int) -> np.ndarray:
  """A (H, W) float32 map in [0, 1] standing in for a predicted boundary probability."""
  rng = np.random.default_rng(seed)
  field = ndimage.gaussian_filter(rng.standard_normal((HEIGHT, WIDTH)), sigma=4)
  field = (field - field.min()) / np.ptp(field)
  regions = ndimage.zoom(rng.integers(0, 6, (6, 9)), (HEIGHT / 6, WIDTH / 9), order=0)
  boundary = np.zeros((HEIGHT, WIDTH))
  boundary[:, 1:] += regions[:, 1:] != regions[:, :-1]
  boundary[1:, :] += regions[1:, :] != regions[:-1, :]
  return np.clip(0.5 * field + 0.6 * ndimage.gaussian_filter(boundary, 1.5), 0, 1).astype(np.float32)


def smooth_dissimilarity(seed: int) -> tuple[np.ndarray, np.ndarray]:
  x = smooth_boundary_map(seed)
  h = 0.5 * (x[:, 1:] + x[:, :-1])  # jhseg.grid.pixel_edges(x, reduction='mean'), in NumPy
  v = 0.5 * (x[1:, :] + x[:-1, :])
  return h, v


def median_ms(fn, repeats: int) -> tuple[float, float]:
  """Median wall and CPU (this process, all threads) milliseconds per call."""
  fn()  # warm-up
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return 1e3 * statistics.median(wall), 1e3 * statistics.median(cpu)


def save_picture(path: str, boundary_map: np.ndarray, ucm, labels: np.ndarray) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from jhseg import grid
  interpixel = np.asarray(grid.edges_to_interpixel(*ucm))
  colours = np.random.default_rng(0).random((labels.max() + 1, 3))
  panels = [(boundary_map, "input boundary map (edges = 'mean')", "gray_r"),
            (interpixel, "UCM (interpixel), min area 30 px", "magma"),
            (colours[labels], f"cut with <= 48 regions ({labels.max() + 1})", None)]
  fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
  for ax, (image, title, cmap) in zip(axes, panels):
    ax.imshow(image, cmap=cmap)
    ax.set_title(title)
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--min-area", type=float, default=30)
  parser.add_argument("--png", default=None,
                      help="also write a picture of the input, its UCM and the 48-region cut here")
  args = parser.parse_args()

  h, v = smooth_dissimilarity(0)
  ucm = hy.ucm_from_dissimilarity(h, v, min_region_area=args.min_area)
  num_superpixels = int(hy.watershed_superpixels(h, v).max()) + 1
  num_regions = int(hy.cut_at_threshold(*ucm, 0.0).max()) + 1

  rows = [
      ("watershed_superpixels (baseline)", lambda: hy.watershed_superpixels(h, v)),
      ("ucm_from_dissimilarity, no area filter", lambda: hy.ucm_from_dissimilarity(h, v, min_region_area=0)),
      (f"ucm_from_dissimilarity, min area {args.min_area:g} px",
       lambda: hy.ucm_from_dissimilarity(h, v, min_region_area=args.min_area)),
      (f"filter_small_regions of that UCM, {args.min_area:g} px",
       lambda: hy.filter_small_regions(*ucm, min_area=args.min_area)),
      ("cut_with_num_regions of that UCM, 48", lambda: hy.cut_with_num_regions(*ucm, 48)),
      ("tree_from_ultrametric + ultrametric_from_tree",
       lambda: hy.ultrametric_from_tree(*hy.tree_from_ultrametric(*ucm), (HEIGHT, WIDTH))),
  ]
  results = [(name, median_ms(fn, args.repeats)) for name, fn in rows]

  batch = [smooth_dissimilarity(s) for s in range(args.batch)]
  hb = np.stack([b[0] for b in batch])
  vb = np.stack([b[1] for b in batch])
  for num_devices in (1, 4):
    mesh = jax.make_mesh((num_devices,), ("data",), devices=jax.devices()[:num_devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    sharding = jax.NamedSharding(mesh, jax.P("data"))
    hd, vd = jax.device_put(hb, sharding), jax.device_put(vb, sharding)
    fn = jax.jit(lambda h, v, mesh=mesh: hy.ucm_from_dissimilarity_jax(
        h, v, min_region_area=args.min_area, mesh=mesh))
    wall, cpu = median_ms(lambda: jax.block_until_ready(fn(hd, vd)), max(2, args.repeats // 3))
    results.append((f"jit callback, batch {args.batch}, {num_devices} device(s), per image",
                    (wall / args.batch, cpu / args.batch)))

  baseline_wall, baseline_cpu = results[0][1]
  print(f"post-processing of one {HEIGHT}x{WIDTH} prediction: {num_superpixels} watershed "
        f"superpixels, {num_regions} regions after the {args.min_area:g} px filter; "
        f"median of {args.repeats} runs, {os.cpu_count()} CPU cores, load average "
        f"{os.getloadavg()[0]:.1f} (wall time grows with load, CPU time much less)")
  print(f"{'step':<62} {'wall ms':>8} {'cpu ms':>8} {'x watershed (cpu)':>18}")
  print("-" * 98)
  for name, (wall, cpu) in results:
    print(f"{name:<62} {wall:8.1f} {cpu:8.1f} {cpu / baseline_cpu:18.2f}")
  wall, cpu = results[2][1]
  if args.png:
    save_picture(args.png, smooth_boundary_map(0), ucm, hy.cut_with_num_regions(*ucm, 48))
    print(f"picture: {args.png}")
  print(f"\ntarget < 100 ms per prediction for the full post-processing: "
        f"{'met' if cpu < 100 else 'NOT met'} in CPU time ({cpu:.1f} ms; wall {wall:.1f} ms)")


if __name__ == "__main__":
  main()
