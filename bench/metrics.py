"""Speed of the BSDS boundary + region benchmark (99 thresholds) on the official sample.

  python bench/metrics.py [--data ../shared/data/bsds500_bench] [--thresholds 99] [--naive-images 2]

Rows, all in the same run on the 481x321 sample images (gPb-owt-ucm `ucm2`):

- naive loop: one Higra match per threshold and annotator, one labelling per
  threshold (1 process) -- the baseline;
- `jhseg.evaluate` with `--matcher higra`: each distinct thinned binary map
  matched once per annotator, each distinct segmentation scored once; its
  counts must equal the naive loop's exactly;
- `jhseg.evaluate` with the default `--matcher bsds` (official cost model,
  SciPy sparse LAPJV) with 1 and 2 worker processes; same number of matched
  pixels, precision counts may differ by tie-breaking between equal-cost
  matchings (shown in pixels, and as the change of ODS/OIS/AP).

Prints images/s, wall and CPU seconds per image, the speed-up over the naive
loop, the projected wall time of the 200-image BSDS500 test set at the measured
rate, and the projection for an idle 2-core machine (CPU seconds per image x
200 / 2 workers). The development machine is shared, so wall times are upper
bounds; the ratios are measured in the same run.
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
  """The reference loop: Higra matcher, no reuse of identical binary maps or segmentations."""
  gt = bsds_io.load_ground_truth(task.ground_truth)
  ucm2 = bsds_io.load_prediction(task.prediction, "ucm2").data
  thresholds = boundary.bsds_thresholds(task.num_thresholds)
  b = boundary.counts_from_ucm2(ucm2, gt.boundaries, num_thresholds=task.num_thresholds, reuse_identical=False,
                                matcher="higra")
  segs = [scipy.ndimage.label(ucm2 <= t, structure=_FOUR)[0][1::2, 1::2] for t in thresholds]
  r = region.region_counts(segs, gt.segmentations, thresholds)
  return evaluate.ImageCounts(task.image_id, b, r)


def _compare(fast: list[evaluate.ImageCounts], naive: list[evaluate.ImageCounts]) -> str:
  """'identical', or the largest count differences in pixels."""
  d_r = max(int(np.abs(f.boundary.cnt_r - n.boundary.cnt_r).max()) for f, n in zip(fast, naive))
  d_p = max(int(np.abs(f.boundary.cnt_p - n.boundary.cnt_p).max()) for f, n in zip(fast, naive))
  same_sums = all(np.array_equal(f.boundary.sum_r, n.boundary.sum_r) and np.array_equal(f.boundary.sum_p, n.boundary.sum_p)
                  for f, n in zip(fast, naive))
  same_region = all(np.allclose(f.region.cnt_r, n.region.cnt_r, rtol=1e-12, atol=0)
                    and np.allclose(f.region.pri, n.region.pri, rtol=1e-12, atol=0)
                    and np.allclose(f.region.voi, n.region.voi, rtol=1e-12, atol=0) for f, n in zip(fast, naive))
  if d_r == d_p == 0 and same_sums and same_region:
    return "identical"
  return (f"cntR max diff {d_r} px, cntP max diff {d_p} px"
          + ("" if same_sums and same_region else "; OTHER COUNTS DIFFER"))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help="the bsds500_bench sample folder")
  parser.add_argument("--thresholds", type=int, default=99, help="number of thresholds")
  parser.add_argument("--naive-images", type=int, default=2,
                      help="images timed with the (slow) naive loop; the other rows use all images")
  parser.add_argument("--test-set-size", type=int, default=200, help="images of the projected full run")
  args = parser.parse_args()
  if not args.data.is_dir():
    raise SystemExit(f"sample data not found: {args.data}")

  def tasks_for(matcher):
    return evaluate.make_tasks(args.data / "ucm2", str(args.data / "groundTruth"), kind="ucm2",
                               num_thresholds=args.thresholds, matcher=matcher)

  rows, results = [], {}
  naive_tasks = tasks_for("higra")[:args.naive_images]
  start, cpu_start = time.perf_counter(), time.process_time()
  naive = [naive_image(t) for t in naive_tasks]
  naive_seconds = (time.perf_counter() - start) / len(naive_tasks)
  naive_cpu = (time.process_time() - cpu_start) / len(naive_tasks)
  rows.append(("naive loop: Higra per threshold x annotator", 1, len(naive_tasks), naive_seconds, naive_cpu,
               "reference"))

  for matcher, workers in (("higra", 1), ("bsds", 1), ("bsds", 2)):
    tasks = tasks_for(matcher)
    start, cpu_start = time.perf_counter(), time.process_time()
    fast = evaluate.evaluate_tasks(tasks, workers=workers, progress=False)
    seconds = (time.perf_counter() - start) / len(tasks)
    # In-process CPU time; with worker processes it is spent in the children (not measured here).
    cpu = (time.process_time() - cpu_start) / len(tasks) if workers == 1 else float("nan")
    results[matcher] = fast
    rows.append((f"jhseg.evaluate --matcher {matcher}", workers, len(tasks), seconds, cpu,
                 _compare(fast[:len(naive)], naive)))

  print(f"BSDS boundary + region benchmark, {args.thresholds} thresholds, 481x321 gPb ucm2 sample, "
        f"{os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f} at the end (shared machine)")
  header = (f"{'method':45s} {'workers':>7s} {'images':>6s} {'img/s':>6s} {'s/img':>6s} {'cpu s/img':>9s} "
            f"{'speed-up':>8s} {'proj. ' + str(args.test_set_size) + ' img':>13s} {'idle 2 cores':>12s}  "
            f"counts vs naive loop")
  print(header)
  print("-" * len(header))
  for name, workers, n, seconds, cpu, same in rows:
    # Projection for an idle 2-core machine: CPU time per image shared by 2 worker processes.
    idle = f"{cpu * args.test_set_size / 2 / 60:8.1f} min" if np.isfinite(cpu) else f"{'':12s}"
    print(f"{name:45s} {workers:7d} {n:6d} {1 / seconds:6.3f} {seconds:6.2f} {cpu:9.2f} "
          f"{naive_seconds / seconds:7.1f}x {seconds * args.test_set_size / 60:9.1f} min {idle}  {same}")

  print()
  print(f"dataset results on all {len(results['bsds'])} images, {args.thresholds} thresholds")
  print(f"{'matcher':8s} {'ODS F':>8s} {'OIS F':>8s} {'AP':>8s} {'cover ODS':>9s} {'PRI ODS':>8s} {'VOI ODS':>8s}")
  for matcher, counts in results.items():
    b = boundary.collect_boundary_counts([c.boundary for c in counts])
    r = region.collect_region_counts([c.region for c in counts])
    print(f"{matcher:8s} {b.ods_f:8.5f} {b.ois_f:8.5f} {b.ap:8.5f} {r.covering_ods:9.5f} {r.pri_ods:8.5f} "
          f"{r.voi_ods:8.5f}")


if __name__ == "__main__":
  main()
