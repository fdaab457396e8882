"""Host cost per image of HSG's data side: coherent regions G_e and the multiview views.

    python bench/hsg_data.py [--repeats 3] [--images DIR] [--png FIGURE.png]

Per image size (short side 240, 375 (VOC), 480 (COCO)), the median time of each step
on real photos (the shared VOC/BSDS samples, resized; random noise if absent):
decoding the JPEG (the baseline every pipeline pays), the built-in edge detector,
the watershed mean-boundary UCM, the raised-threshold cut (<= 48 regions), and the
multiview transform (2 views, 224 crop). Ratios are to the JPEG decode in the same run.

Second table: the `CoherentRegions` transform per example without cache
(cache_entries=0), with its in-memory cache (default) and with its disk cache
(cache_dir, a fresh temporary folder): epoch 1 = the first sight of the image
(computed, then stored), epoch 2 = the same image again (read from the cache), and
the speed-up of epoch 2 over the uncached transform, all measured in the same run.
Column `KB cached` of the first table: the size of one cache entry (compressed .npz).
The disk reads come from the OS page cache here; a cold or network disk adds its
latency to one small file (a few KB) per image.
With --png, also writes a picture of the first photo: image, builtin edges, G_e (one
colour per region id) and two views with their warped regions in the same colours
(black outside the image), to check by eye that ids correspond across views.
"""
from __future__ import annotations

import argparse
import io
import pathlib
import statistics
import tempfile

import numpy as np
from PIL import Image

import step_timing  # bench/step_timing.py, beside this script

from jhseg.data import coherent_regions as cr
from jhseg.data import multiview as mv
from jhseg.viz import segments

SIZES = ((240, 320), (375, 500), (480, 640))
SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def photos(folder: pathlib.Path | None, count: int = 3) -> list[np.ndarray]:
  files = sorted(folder.rglob("*.jpg"))[:count] if folder and folder.is_dir() else []
  if not files:
    rng = np.random.default_rng(0)
    return [(rng.random((400, 600, 3)) * 255).astype(np.uint8) for _ in range(count)]
  return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def cached_transform_times(image: np.ndarray, repeats: int,
                           scratch: pathlib.Path) -> dict[str, tuple[float, float]]:
  """(epoch 1, epoch 2) median seconds of the G_e transform on `image`, per cache."""
  example = {"image": image}
  caches = {
      "none (cache_entries=0)": lambda: cr.CoherentRegions(cache_entries=0),
      "memory (default)": cr.CoherentRegions,
      "disk (cache_dir)": lambda: cr.CoherentRegions(cache_dir=tempfile.mkdtemp(dir=scratch)),
  }
  times = {}
  for name, make in caches.items():
    first, second = [], []
    for _ in range(repeats):  # a new transform each time: epoch 1 is always a first sight
      transform = make()
      first.append(step_timing.median_seconds(lambda: transform(example), 1, warm_up=False))
      second.append(step_timing.median_seconds(lambda: transform(example), 1, warm_up=False))
    times[name] = (statistics.median(first), statistics.median(second))
  return times


def write_figure(photo: np.ndarray, path: pathlib.Path) -> None:
  example = cr.CoherentRegions()({"image": photo})
  edges = cr.ColourGradientEdges()({"image": photo})
  out = mv.make_multiview(mv.MultiviewConfig(crop_size=224))(example, np.random.default_rng(3))
  palette = segments.label_palette(48)

  def regions_rgb(labels):
    return np.where(labels[..., None] >= 0, palette[np.maximum(labels, 0)], 0.0)

  top = [photo / 255.0, np.repeat(edges[..., None], 3, -1), regions_rgb(example["regions"])]
  bottom = [out["views"][0], regions_rgb(out["view_regions"][0]),
            out["views"][1], regions_rgb(out["view_regions"][1])]
  height = max(photo.shape[0], 224)

  def row(panels):
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 6), (0, 0)), constant_values=1)
                           for p in panels], 1)

  rows = [row(top), row(bottom)]
  width = max(r.shape[1] for r in rows)
  canvas = np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=1)
                           for r in rows])
  Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8)).save(path)
  print(f"wrote {path}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--images", type=pathlib.Path, default=SAMPLES / "pascal_part_sample")
  parser.add_argument("--png", type=pathlib.Path, default=None)
  args = parser.parse_args()
  if args.png:
    write_figure(photos(args.images, count=1)[0], args.png)
  multiview = mv.make_multiview(mv.MultiviewConfig(crop_size=224))
  cache_rows: dict[tuple[int, int], dict[str, list[tuple[float, float]]]] = {}
  scratch = tempfile.TemporaryDirectory(prefix="hsg_data_bench_")
  print(f"{'size':>9} {'step':<22} {'ms/image':>9} {'x decode':>9} {'regions':>8} "
        f"{'KB cached':>9}")
  for height, width in SIZES:
    rows: dict[str, list[float]] = {}
    counts, entry_bytes = [], []
    for photo in photos(args.images):
      image = np.asarray(Image.fromarray(photo).resize((width, height), Image.BILINEAR))
      for name, pair in cached_transform_times(image, args.repeats,
                                               pathlib.Path(scratch.name)).items():
        cache_rows.setdefault((height, width), {}).setdefault(name, []).append(pair)
      buffer = io.BytesIO()
      Image.fromarray(image).save(buffer, format="JPEG", quality=90)
      jpeg = buffer.getvalue()
      edges = cr.ColourGradientEdges()({"image": image})
      h, v = cr.edge_map_ucm(edges)
      labels, _ = cr.raised_threshold_cut(h, v, max_regions=48, start_threshold=0.25,
                                          threshold_step=0.01)
      counts.append(int(labels.max()) + 1)
      entry_bytes.append(len(cr.encode_regions(labels, key="k" * 40)))
      example = {"image": image, "regions": labels}
      steps = {
          "decode JPEG": lambda: np.asarray(Image.open(io.BytesIO(jpeg))),
          "edges (builtin)": lambda: cr.ColourGradientEdges()({"image": image}),
          "UCM (watershed+mean)": lambda: cr.edge_map_ucm(edges),
          "cut (<= 48 regions)": lambda: cr.raised_threshold_cut(
              h, v, max_regions=48, start_threshold=0.25, threshold_step=0.01),
          "G_e total": lambda: cr.CoherentRegions(cache_entries=0)({"image": image}),
          "multiview (2 x 224)": lambda: multiview(example, np.random.default_rng(0)),
      }
      for name, fn in steps.items():
        rows.setdefault(name, []).append(
            step_timing.median_seconds(fn, args.repeats, warm_up=False))
    base = statistics.mean(rows["decode JPEG"])
    for name, times in rows.items():
      t = statistics.mean(times)
      extra = (f"{statistics.mean(counts):8.1f} {statistics.mean(entry_bytes) / 1e3:9.1f}"
               if name == "G_e total" else "")
      print(f"{height:>4}x{width:<4} {name:<22} {1e3 * t:9.1f} {t / base:9.1f} {extra}")
  print()
  print("G_e transform per example (ms/image): epoch 1 = first sight, epoch 2 = seen before")
  print(f"{'size':>9} {'cache':<24} {'epoch 1':>9} {'epoch 2':>9} {'uncached / epoch 2':>19}")
  for (height, width), by_cache in cache_rows.items():
    uncached = statistics.mean(second for _, second in by_cache["none (cache_entries=0)"])
    for name, pairs in by_cache.items():
      first = statistics.mean(p[0] for p in pairs)
      second = statistics.mean(p[1] for p in pairs)
      print(f"{height:>4}x{width:<4} {name:<24} {1e3 * first:9.2f} {1e3 * second:9.2f} "
            f"{uncached / second:18.1f}x")
  scratch.cleanup()


if __name__ == "__main__":
  main()
