"""`python -m jhseg.evaluate`: the BSDS500 boundary and region benchmarks over a folder.

Reproduces the official BSR benchmark (`boundaryBench`/`allBench` +
`collect_eval_bdry.m`/`collect_eval_reg.m`) on a folder of predictions, one
file per image named after the ground truth's image id:

  python -m jhseg.evaluate --predictions DIR --ground-truth DIR_or_tfds:NAME/SPLIT \\
      --output DIR [--kind auto|ucm2|npy|png|segs] [--thresholds 99] [--workers N] \\
      [--matcher bsds|higra]

Writes into `--output`: the official text files under their official names and
formats (`eval_bdry.txt`, `eval_bdry_thr.txt`, `eval_bdry_img.txt`, and for
UCMs and segmentations also `eval_cover.txt`, `eval_cover_th.txt`,
`eval_cover_img.txt`, `eval_RI_VOI.txt`, `eval_RI_VOI_thr.txt`), a JSON summary
`summary.json`, and the PR curve with iso-F lines `pr_curve.png`. Images are
evaluated in worker processes with a progress bar. Boundary pixels are matched
with the official cost model by default (`jhseg.hierarchy.matching`).

Speed (`bench/metrics.py`, 481x321 images, 99 thresholds, boundary + region):
about 2.7 CPU seconds per image with the default matcher, i.e. ~4.5 minutes
for the 200 BSDS500 test images on two idle cores (5.1 s with `--matcher higra`).

From Python: `boundary_result, region_result = evaluate_folder(predictions_dir,
ground_truth_dir_or_tfds, workers=2, kind="ucm2", num_thresholds=99)`.

Options use argparse (not absl) to keep the dashed option names of the
benchmark's documentation (`--ground-truth`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import pathlib
import sys
from typing import Sequence
import warnings

import numpy as np

from jhseg.hierarchy import matching
from jhseg.metrics import boundary
from jhseg.metrics import bsds_io
from jhseg.metrics import region

KINDS = ("auto",) + bsds_io.PREDICTION_KINDS
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class ImageTask:
  """Everything a worker needs to score one image."""
  image_id: str
  prediction: pathlib.Path
  kind: str
  ground_truth: pathlib.Path | bsds_io.GroundTruth
  num_thresholds: int
  max_distance: float
  thin: bool
  matcher: str = matching.DEFAULT_MATCHER


@dataclasses.dataclass(frozen=True)
class ImageCounts:
  image_id: str
  boundary: boundary.BoundaryCounts
  region: region.RegionCounts | None


# ----------------------------------------------------------------------------- inputs


def _ground_truth_from_folder(folder: pathlib.Path) -> dict[str, pathlib.Path]:
  if not folder.is_dir():
    raise FileNotFoundError(f"--ground-truth: {folder} is not a folder (nor 'tfds:NAME/SPLIT')")
  files = sorted(folder.glob("*.mat"))
  if not files:
    raise FileNotFoundError(f"--ground-truth: no groundTruth .mat files in {folder}")
  return {f.stem: f for f in files}


def _ground_truth_from_tfds(spec: str, data_dir: str | None) -> dict[str, bsds_io.GroundTruth]:
  """Reads `tfds:NAME/SPLIT` (features `image/id`, `segmentations`, `boundaries`, as the bsds500 builder)."""
  name_split = spec[len(TFDS_PREFIX):]
  if "/" not in name_split:
    raise ValueError(f"--ground-truth: expected 'tfds:NAME/SPLIT', got {spec!r}")
  name, split = name_split.split("/", 1)
  import importlib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jhseg.data import sources  # pylint: disable=g-import-not-at-top
  base = name.split(":")[0]
  if base in sources.LOCAL_BUILDERS:  # register this repository's builders with TFDS
    importlib.import_module(sources.LOCAL_BUILDERS[base])
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001 -- TFDS raises many types
    raise FileNotFoundError(f"--ground-truth: cannot open TFDS dataset {name!r} split {split!r} "
                            f"(data_dir={data_dir}): {e}") from e
  out = {}
  for k in range(len(source)):
    record = source[k]
    for field in ("image/id", "segmentations", "boundaries"):
      if field not in record:
        raise KeyError(f"--ground-truth: {spec} record {k} has no feature {field!r} (has {sorted(record)})")
    image_id = record["image/id"]
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    out[image_id] = bsds_io.ground_truth_from_arrays(
        list(record["segmentations"]), list(record["boundaries"]), source=f"{spec} id {image_id}")
  if not out:
    raise ValueError(f"--ground-truth: {spec} is empty")
  return out


def _prediction_file(folder: pathlib.Path, image_id: str, kind: str) -> tuple[pathlib.Path, str]:
  """The prediction file of an image and its kind (auto: by extension, .mat by its variable)."""
  if kind != "auto":
    path = folder / f"{image_id}{bsds_io.PREDICTION_EXTENSIONS[kind]}"
    if not path.is_file():
      raise FileNotFoundError(f"{path}: missing prediction for ground-truth image {image_id!r}")
    return path, kind
  for ext, guessed in ((".mat", None), (".npy", "npy"), (".png", "png")):
    path = folder / f"{image_id}{ext}"
    if path.is_file():
      if guessed is None:
        import scipy.io  # pylint: disable=g-import-not-at-top
        try:
          names = {n for n, _, _ in scipy.io.whosmat(path)}
        except Exception as e:  # noqa: BLE001
          raise bsds_io.BSDSFormatError(f"{path}: not a readable MATLAB .mat file ({e})") from e
        guessed = "ucm2" if "ucm2" in names else "segs" if "segs" in names else None
        if guessed is None:
          raise bsds_io.BSDSFormatError(f"{path}: has neither a 'ucm2' nor a 'segs' variable (found {sorted(names)})")
      return path, guessed
  raise FileNotFoundError(f"{folder}: no prediction {image_id}.mat/.npy/.png for ground-truth image {image_id!r}")


def make_tasks(predictions: str | os.PathLike, ground_truth: str, *, kind: str = "auto",
               num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS,
               max_distance: float = boundary.DEFAULT_MAX_DISTANCE, thin: bool = True,
               matcher: str = matching.DEFAULT_MATCHER, tfds_data_dir: str | None = None) -> list[ImageTask]:
  """One task per ground-truth image, in the official (ASCII-sorted file name) order."""
  if kind not in KINDS:
    raise ValueError(f"unknown --kind {kind!r}; valid kinds: {', '.join(KINDS)}")
  if matcher not in matching.MATCHERS:
    raise ValueError(f"unknown --matcher {matcher!r}; valid matchers: {', '.join(matching.MATCHERS)}")
  predictions = pathlib.Path(predictions)
  if not predictions.is_dir():
    raise FileNotFoundError(f"--predictions: {predictions} is not a folder")
  if ground_truth.startswith(TFDS_PREFIX):
    gts = _ground_truth_from_tfds(ground_truth, tfds_data_dir)
  else:
    gts = _ground_truth_from_folder(pathlib.Path(ground_truth))
  tasks = []
  for image_id in sorted(gts):
    path, image_kind = _prediction_file(predictions, image_id, kind)
    tasks.append(ImageTask(image_id, path, image_kind, gts[image_id], num_thresholds, max_distance, thin, matcher))
  return tasks


# ----------------------------------------------------------------------------- per image


def evaluate_image(task: ImageTask) -> ImageCounts:
  """Boundary (and, for UCMs and segmentations, region) counts of one image."""
  gt = task.ground_truth
  if not isinstance(gt, bsds_io.GroundTruth):
    gt = bsds_io.load_ground_truth(gt)
  pred = bsds_io.load_prediction(task.prediction, task.kind)
  h, w = gt.shape
  opts = dict(max_distance=task.max_distance, thin_maps=task.thin, matcher=task.matcher)
  data = pred.data
  if pred.kind == "pb" and data.shape == (2 * h + 1, 2 * w + 1):  # a .npy ucm2
    pred = bsds_io.Prediction("ucm2", data)
  if pred.kind == "ucm2":
    if data.shape != (2 * h + 1, 2 * w + 1):
      raise bsds_io.BSDSFormatError(
          f"{task.prediction}: ucm2 of shape {data.shape}, expected {(2 * h + 1, 2 * w + 1)} for ground truth {h}x{w}")
    _warn_if_frame_not_replicated(data, task.prediction)
    b = boundary.counts_from_ucm2(data, gt.boundaries, num_thresholds=task.num_thresholds, **opts)
    r = region.region_counts_from_ucm2(data, gt.segmentations, num_thresholds=task.num_thresholds)
  elif pred.kind == "segs":
    if data[0].shape != (h, w):
      raise bsds_io.BSDSFormatError(f"{task.prediction}: segmentations of shape {data[0].shape}, expected {(h, w)}")
    b = boundary.counts_from_segmentations(data, gt.boundaries, **opts)
    r = region.region_counts_from_segmentations(data, gt.segmentations)
  else:
    if data.shape != (h, w):
      raise bsds_io.BSDSFormatError(
          f"{task.prediction}: boundary map of shape {data.shape}, expected {(h, w)} "
          f"(or {(2 * h + 1, 2 * w + 1)} for a ucm2)")
    b = boundary.counts_from_soft_map(data, gt.boundaries, num_thresholds=task.num_thresholds, **opts)
    r = None
  return ImageCounts(task.image_id, b, r)


def _warn_if_frame_not_replicated(ucm2: np.ndarray, path: pathlib.Path) -> None:
  """BSDS ucm2 files repeat the outer interpixel rows/columns on their frame.

  (`ucm2 == np.pad(ucm2[1:-1, 1:-1], 1, mode="edge")` for every file of the
  release.) With another frame, e.g. zeros, `ucm2 <= t` connects every region
  along the frame and the region benchmark sees a single region.
  """
  inner = ucm2[1:-1, 1:-1]
  if not np.array_equal(ucm2, np.pad(inner, 1, mode="edge")):
    warnings.warn(f"{path}: the ucm2 frame does not repeat the adjacent rows/columns as BSDS ucm2 files do "
                  f"(np.pad(interpixel, 1, mode='edge')); regions may merge along the frame", stacklevel=2)


def evaluate_tasks(tasks: Sequence[ImageTask], *, workers: int = 1, progress: bool = True) -> list[ImageCounts]:
  """Scores the images, in `workers` processes (1: in this process), in task order."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  bar = dict(total=len(tasks), desc="bsds images", unit="img", disable=not progress)
  if workers <= 1:
    return [evaluate_image(t) for t in tqdm(tasks, **bar)]
  # fork: workers inherit the imported modules (the metrics initialise no JAX backend); spawn once
  # TensorFlow (TFDS ground truth) is loaded, whose threads make fork unsafe.
  fork_ok = "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules
  method = "fork" if fork_ok else "spawn"
  with multiprocessing.get_context(method).Pool(workers) as pool:
    return list(tqdm(pool.imap(evaluate_image, tasks, chunksize=1), **bar))


# ----------------------------------------------------------------------------- outputs


def _write_rows(path: pathlib.Path, fmt: str, rows) -> None:
  with open(path, "w") as f:
    for row in np.atleast_2d(np.asarray(rows, np.float64)):
      f.write(fmt % tuple(row) + "\n")


def write_official_files(output: pathlib.Path, bdry: boundary.BoundaryResult,
                         reg: region.RegionResult | None) -> list[pathlib.Path]:
  """The text files of `collect_eval_bdry.m` / `collect_eval_reg.m`, same names and printf formats."""
  n = len(bdry.per_image)
  files = {
      "eval_bdry.txt": ("%10g %10g %10g %10g %10g %10g %10g %10g", [list(bdry.summary().values())]),
      "eval_bdry_thr.txt": ("%10g %10g %10g %10g", np.c_[bdry.thresholds, bdry.recall, bdry.precision, bdry.f]),
      "eval_bdry_img.txt": ("%10d %10g %10g %10g %10g", np.c_[np.arange(1, n + 1), bdry.per_image]),
  }
  if reg is not None:
    s = list(reg.summary().values())
    files.update({
        "eval_cover.txt": ("%10g %10g %10g %10g", [s[:4]]),
        "eval_cover_th.txt": ("%10g %10g", np.c_[reg.thresholds, reg.covering]),
        "eval_cover_img.txt": ("%10d %10g %10g %10g", np.c_[np.arange(1, n + 1), reg.covering_per_image]),
        "eval_RI_VOI.txt": ("%10g %10g %10g %10g %10g %10g", [s[4:]]),
        "eval_RI_VOI_thr.txt": ("%10g %10g %10g", np.c_[reg.thresholds, reg.pri, reg.voi]),
    })
  paths = []
  for name, (fmt, rows) in files.items():
    _write_rows(output / name, fmt, rows)
    paths.append(output / name)
  return paths


def summary_dict(counts: Sequence[ImageCounts], bdry: boundary.BoundaryResult,
                 reg: region.RegionResult | None) -> dict:
  out = {
      "num_images": len(counts),
      "image_ids": [c.image_id for c in counts],
      "boundary": {**bdry.summary(), "thresholds": bdry.thresholds.tolist(), "recall": bdry.recall.tolist(),
                   "precision": bdry.precision.tolist(), "f": bdry.f.tolist()},
  }
  out["boundary"]["per_image"] = [
      {"id": c.image_id, "best_threshold": t, "recall": r, "precision": p, "f": f}
      for c, (t, r, p, f) in zip(counts, bdry.per_image.tolist())]
  if reg is not None:
    out["region"] = {**reg.summary(), "thresholds": reg.thresholds.tolist(), "covering": reg.covering.tolist(),
                     "pri": reg.pri.tolist(), "voi": reg.voi.tolist()}
    out["region"]["per_image"] = [
        {"id": c.image_id, "best_threshold": t, "covering": cov, "reverse_covering": rev,
         "pri_best": float(c.region.pri.max()), "voi_best": float(c.region.voi.min())}
        for c, (t, cov, rev) in zip(counts, reg.covering_per_image.tolist())]
  return out


def collect(counts: Sequence[ImageCounts]) -> tuple[boundary.BoundaryResult, region.RegionResult | None]:
  """Dataset results of per-image counts (region results only if every image has them)."""
  if not counts:
    raise ValueError("no images to evaluate")
  first = counts[0]
  for c in counts[1:]:
    if not np.array_equal(c.boundary.thresholds, first.boundary.thresholds):
      raise ValueError(f"image {c.image_id}: {len(c.boundary.thresholds)} thresholds (segmentations) but image "
                       f"{first.image_id} has {len(first.boundary.thresholds)}; the benchmark needs the same for all")
  with_region = [c.region is not None for c in counts]
  if any(with_region) and not all(with_region):
    raise ValueError("mixed prediction kinds: region benchmarks apply to some images only; use one --kind")
  bdry = boundary.collect_boundary_counts([c.boundary for c in counts])
  reg = region.collect_region_counts([c.region for c in counts]) if all(with_region) else None
  return bdry, reg


def evaluate_folder(predictions: str | os.PathLike, ground_truth: str, *, workers: int = 1, progress: bool = False,
                    **task_options) -> tuple[boundary.BoundaryResult, region.RegionResult | None]:
  """Python entry point: `make_tasks(predictions, ground_truth, **task_options)`, scored and collected."""
  tasks = make_tasks(predictions, ground_truth, **task_options)
  return collect(evaluate_tasks(tasks, workers=workers, progress=progress))


def run(args: argparse.Namespace) -> dict:
  """Evaluates and writes every output; returns the JSON summary."""
  tasks = make_tasks(args.predictions, args.ground_truth, kind=args.kind, num_thresholds=args.thresholds,
                     max_distance=args.max_distance, thin=not args.no_thin, matcher=args.matcher,
                     tfds_data_dir=args.tfds_data_dir)
  counts = evaluate_tasks(tasks, workers=args.workers, progress=not args.quiet)
  bdry, reg = collect(counts)
  output = pathlib.Path(args.output)
  output.mkdir(parents=True, exist_ok=True)
  write_official_files(output, bdry, reg)
  summary = summary_dict(counts, bdry, reg)
  (output / "summary.json").write_text(json.dumps(summary, indent=2))
  from jhseg.viz import pr_curve  # pylint: disable=g-import-not-at-top
  pr_curve.save_pr_curve_png(output / "pr_curve.png", {"predictions": (bdry.recall, bdry.precision)},
                             ods_points={"predictions": (bdry.ods_recall, bdry.ods_precision)},
                             title=f"BSDS boundaries, {len(counts)} images")
  return summary


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m jhseg.evaluate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
      description="BSDS500 boundary (ODS/OIS/AP) and region (covering, PRI, VOI) benchmarks, as the official "
                  "BSR benchmark, over a folder of per-image predictions named <image id>.<ext>.")
  parser.add_argument("--predictions", required=True, metavar="DIR",
                      help="folder of predictions: <id>.mat holding 'ucm2' ((2H+1)x(2W+1) ultrametric contour map) "
                           "or 'segs' (cell of label maps), <id>.png (8/16-bit soft boundaries), or <id>.npy (HxW "
                           "soft boundaries in [0,1] or a (2H+1)x(2W+1) ucm2)")
  parser.add_argument("--ground-truth", "--ground_truth", dest="ground_truth", required=True,
                      metavar="DIR|tfds:NAME/SPLIT",
                      help="a folder of BSDS groundTruth/<id>.mat files, or a TFDS dataset with features 'image/id', "
                           "'segmentations' (K,H,W), 'boundaries' (K,H,W) (e.g. tfds:bsds500/test from tfds_builders.bsds500)")
  parser.add_argument("--output", required=True, metavar="DIR",
                      help="folder for eval_*.txt (official names and formats), summary.json and pr_curve.png")
  parser.add_argument("--kind", choices=KINDS, default="auto",
                      help="prediction format; auto: by extension, .mat files by their variable")
  parser.add_argument("--thresholds", type=int, default=boundary.DEFAULT_NUM_THRESHOLDS, metavar="N",
                      help="number of thresholds for ucm2/png/npy maps: linspace(1/(N+1), 1-1/(N+1), N); "
                           "segmentation lists use one threshold per segmentation")
  parser.add_argument("--max-distance", "--max_distance", dest="max_distance", type=float,
                      default=boundary.DEFAULT_MAX_DISTANCE,
                      help="boundary matching tolerance, as a fraction of the image diagonal")
  parser.add_argument("--matcher", choices=tuple(matching.MATCHERS), default=matching.DEFAULT_MATCHER,
                      help="boundary pixel matcher: 'bsds' = the official correspondPixels cost model solved exactly "
                           "(SciPy sparse LAPJV), 'higra' = Higra's match_pixels_image_2d (max cardinality, then min "
                           "distance; ~3x slower); see jhseg.hierarchy.matching")
  parser.add_argument("--no-thin", "--no_thin", dest="no_thin", action="store_true",
                      help="do not thin the binarised machine boundaries (the official benchmark thins)")
  parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                      help="worker processes over images (1: evaluate in this process)")
  parser.add_argument("--tfds-data-dir", "--tfds_data_dir", dest="tfds_data_dir", default=None, metavar="DIR",
                      help="TFDS data_dir for a tfds: ground truth (None: TFDS's default, ~/tensorflow_datasets)")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.thresholds < 1:
    parser.error(f"--thresholds must be >= 1, got {args.thresholds}")
  if args.workers < 1:
    parser.error(f"--workers must be >= 1, got {args.workers}")
  try:
    summary = run(args)
  except (FileNotFoundError, bsds_io.BSDSFormatError, KeyError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  b = summary["boundary"]
  print(f"boundary ODS F={b['ods_f']:.4f} OIS F={b['ois_f']:.4f} AP={b['ap']:.4f}")
  if "region" in summary:
    r = summary["region"]
    print(f"covering ODS={r['covering_ods']:.4f} OIS={r['covering_ois']:.4f} best={r['covering_best']:.4f}; "
          f"PRI ODS={r['pri_ods']:.4f}; VOI ODS={r['voi_ods']:.4f}")
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
