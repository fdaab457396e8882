"""Speed of the BSDS boundary + region benchmark (99 thresholds) on the official sample.

  python bench/metrics.py [--data ../shared/data/bsds500_bench] [--thresholds 99] [--naive-images 2]

Rows, all in the same run on the 481x321 sample images (gPb-owt-ucm `ucm2`):

- naive loop: one Higra match per threshold and annotator, one labelling per
  threshold (1 process);
- jhseg.evaluate with 1 and 2 worker processes: each distinct thinned binary
  map matched once per annotator, each distinct segmentation scored once.

Prints images/s, seconds per image, the speed-up over the naive loop, the
projected time of the 200-image BSDS500 test set, and whether the per-image
counts equal the naive loop's exactly (they must: the fast path only skips
recomputing identical inputs).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np
import scipy.ndimage

from jhseg import evaluate
from jhseg.metrics import boundary
from jhseg.metrics import bsds_io
from jhseg.metrics import region

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bsds500_bench"
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def naive_image(task: evaluate.ImageTask) -> evaluate.ImageCounts:
  """The reference loop: no reuse of identical binary maps or segmentations."""
  gt = bsds_io.load_ground_truth(task.ground_truth)
  ucm2 = bsds_io.load_prediction(task.prediction, "ucm2").data
  thresholds = boundary.bsds_thresholds(task.num_thresholds)
  b = boundary.counts_from_ucm2(ucm2, gt.boundaries, num_thresholds=task.num_thresholds, reuse_identical=False)
  segs = [scipy.ndimage.label(ucm2 <= t, structure=_FOUR)[0][1::2, 1::2] for t in thresholds]
  r = region.region_counts(segs, gt.segmentations, thresholds)
  return evaluate.ImageCounts(task.image_id, b, r)


def _same(a: evaluate.ImageCounts, b: evaluate.ImageCounts) -> bool:
  fields_b = ("cnt_r", "sum_r", "cnt_p", "sum_p")
  fields_r = ("cnt_r", "sum_r", "cnt_p", "sum_p", "pri", "voi")
  return (all(np.array_equal(getattr(a.boundary, f), getattr(b.boundary, f)) for f in fields_b)
          and all(np.allclose(getattr(a.region, f), getattr(b.region, f), rtol=1e-12, atol=0) for f in fields_r)
          and np.isclose(a.region.cnt_r_best, b.region.cnt_r_best, rtol=1e-12))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="the bsds500_bench sample folder")
  parser.add_argument("--thresholds", type=int, default=99, help="number of thresholds")
  parser.add_argument("--naive-images", type=int, default=2,
                      help="images timed with the (slow) naive loop; the fast rows use all images")
  parser.add_argument("--test-set-size", type=int, default=200, help="images of the projected full run")
  args = parser.parse_args()
  if not args.data.is_dir():
    raise SystemExit(f"sample data not found: {args.data}")

  tasks = evaluate.make_tasks(args.data / "ucm2", str(args.data / "groundTruth"), kind="ucm2",
                              num_thresholds=args.thresholds)
  rows = []

  naive_tasks = tasks[:args.naive_images]
  start = time.perf_counter()
  naive = [naive_image(t) for t in naive_tasks]
  naive_seconds = (time.perf_counter() - start) / len(naive_tasks)
  rows.append(("naive loop (Higra per threshold x annotator)", 1, len(naive_tasks), naive_seconds, "reference"))

  for workers in (1, 2):
    start = time.perf_counter()
    fast = evaluate.evaluate_tasks(tasks, workers=workers, progress=False)
    seconds = (time.perf_counter() - start) / len(tasks)
    same = all(_same(f, n) for f, n in zip(fast, naive))
    rows.append((f"jhseg.evaluate, {workers} worker{'s' * (workers > 1)}", workers, len(tasks), seconds,
                 "identical" if same else "DIFFERENT"))

  print(f"BSDS boundary + region benchmark, {args.thresholds} thresholds, 481x321 ucm2 sample, "
        f"{os.cpu_count()} CPUs visible (shared machine: times are upper bounds)")
  header = f"{'method':46s} {'workers':>7s} {'images':>6s} {'img/s':>7s} {'s/img':>7s} {'speed-up':>8s} " \
           f"{'proj. ' + str(args.test_set_size) + ' img':>13s}  counts vs naive"
  print(header)
  print("-" * len(header))
  for name, workers, n, seconds, same in rows:
    projected = seconds * args.test_set_size
    print(f"{name:46s} {workers:7d} {n:6d} {1 / seconds:7.3f} {seconds:7.2f} {naive_seconds / seconds:7.1f}x "
          f"{projected / 60:10.1f} min  {same}")


if __name__ == "__main__":
  main()
