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
`summary.json`, and the PR curve with iso-F lines `pr_curve.png`. UCMs and
segmentations also get the objects-and-parts F-measure Fop (Pont-Tuset & Marques,
CVPR 2013; `jhseg.metrics.fop`, as SEISM and DEL report it) at ODS, OIS and AP over
the same thresholds: `eval_fop.txt`, `eval_fop_thr.txt`, `eval_fop_img.txt` (the
layouts of the `eval_bdry*.txt` files) and summary.json's `fop` (`--no-fop` skips
it). Images are evaluated in worker processes with a progress bar. Boundary
pixels are matched with the official cost model by default
(`jhseg.hierarchy.matching`).

Hierarchical ground truth: when the ground truth is a TFDS dataset with a `ucm`
feature (interpixel (2H-1, 2W-1) ultrametric with a few levels, e.g. {0, 0.5, 1}
for `ultrametric_pascal_part` and `synthetic_scenes`), UCM predictions (ucm2
`.mat`/`.npy`/`.png`, or an interpixel (2H-1, 2W-1) `.npy`) are scored with the
three metrics of Lapertot, Chierchia, Perret (sec. 4; `jhseg.metrics.ucm_evaluation`):
the boundary PR curves (ODS/OIS/AP, the `eval_bdry*.txt` files) against the
finest ground-truth segmentation, the Level Recovery Fraction per level and the
False Discovery Fraction, from one BSDS matching per distinct cut, over the sweep
t = 0, 1/(N+1), ..., 1 (N = `--thresholds`; contours = weights >= t; boundary
maps drawn as `seg2bdry` and not thinned, see that module), written
into summary.json (`level_recovery`, with per-class ODS/OIS/AP) and drawn in
`lrf_fdf.png` (and `per_class.png` when the dataset has `instance_classes`). The
levels are the distinct positive `ucm` values of the dataset. With an
`instances` feature the paper's object-neighbourhood protocol applies to all
three metrics, for any method's UCMs (`--no-neighbourhood`: whole images), and
with `instance_classes` the per-class protocol of its Fig. 8 (crops around each
instance, other classes' boundaries removed from the target). Such datasets need
no BSDS features: without `segmentations`/`boundaries` the region benchmarks use
one annotation, the finest ground-truth segmentation (the regions of `ucm > 0`
contours) over the whole image; without `image/id` an image's id is its record
index (`0`, `1`, ...; prediction files `0.npy`, ...). Soft boundary maps and
segmentation lists are not UCMs: they get the BSDS benchmarks only, over whole
images (closed contours are not defined for them).

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
from typing import Any, Sequence
import warnings

import numpy as np

from jhseg.hierarchy import matching
from jhseg.metrics import boundary
from jhseg.metrics import bsds_io
from jhseg.metrics import fop as fop_lib
from jhseg.metrics import level_recovery
from jhseg.metrics import region
from jhseg.metrics import ucm_evaluation

KINDS = ("auto",) + bsds_io.PREDICTION_KINDS
TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class LevelTruth:
  """Hierarchical ground truth of one image, for LRF/FDF.

  Attributes:
    ucm: interpixel (2H-1, 2W-1) ultrametric; its value on an edge is the edge's level.
    levels: the levels reported (the dataset's distinct positive `ucm` values).
    instances: (H, W) object instance ids (0 = background) for the object-neighbourhood
      protocol, or None (whole image).
    instance_classes: {instance id: class id} for the per-class crops, or None.
  """
  ucm: np.ndarray
  levels: tuple[float, ...]
  instances: np.ndarray | None = None
  instance_classes: dict[int, int] | None = None


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
  level_truth: LevelTruth | None = None
  fop: bool = True  # score Fop too (UCMs and segmentation lists)
  level_matching: str = "bsds"  # LRF/FDF matching: ucm_evaluation.LEVEL_MATCHINGS


@dataclasses.dataclass(frozen=True)
class ImageCounts:
  image_id: str
  boundary: boundary.BoundaryCounts
  region: region.RegionCounts | None
  # One image's LRF/FDF counts (None: no hierarchical ground truth, or not a UCM prediction).
  levels: ucm_evaluation.UcmEvaluation | None = None
  # One image's Fop sweep (None: not a UCM or segmentation list, or Fop not asked for).
  fop: fop_lib.FopAccumulator | None = None


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
  return _read_tfds(spec, data_dir)[0]


def _ground_truth_from_ucm(ucm: np.ndarray, source: str) -> bsds_io.GroundTruth:
  """One BSDS annotation from an interpixel ultrametric: its finest segmentation (contours ucm > 0)."""
  h, v = _interpixel_edges(ucm)
  segmentation = level_recovery.contour_regions(h > 0, v > 0)
  # As the release: Boundaries = thin(seg2bdry(Segmentation)).
  bdry = boundary.thin(boundary.boundaries_from_segmentation(segmentation))
  return bsds_io.ground_truth_from_arrays([segmentation], [bdry], source=source)


def _grid_float64(function, array: np.ndarray):
  """`function(array)` of `jhseg.grid` in float64, as NumPy array(s).

  x64: the thresholds compare float64 weights as the official benchmark does
  (in float32 a weight 0.3 is 0.30000001 > 0.3, an extra contour at t = 0.3).
  """
  import jax  # pylint: disable=g-import-not-at-top
  with jax.enable_x64(True):
    out = function(np.asarray(array, np.float64))
    return tuple(map(np.asarray, out)) if isinstance(out, tuple) else np.asarray(out)


def _interpixel_edges(ucm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Edge weights (h, v) of an interpixel map, in float64."""
  from jhseg import grid  # pylint: disable=g-import-not-at-top
  return _grid_float64(grid.interpixel_to_edges, ucm)


def _level_truth_fields(record, k: int, spec: str, image_id: str, shape: tuple[int, int] | None,
                        neighbourhood: bool) -> dict:
  """The `ucm` (and `instances`, `instance_classes`) of a record, checked against the image size."""
  ucm = np.asarray(record["ucm"], np.float32)
  where = f"--ground-truth: {spec} record {k} (id {image_id})"
  if ucm.ndim != 2 or ucm.shape[0] % 2 != 1 or ucm.shape[1] % 2 != 1:
    raise ValueError(f"{where}: feature 'ucm' must be an interpixel (2H-1, 2W-1) map, got shape {ucm.shape}")
  size = ((ucm.shape[0] + 1) // 2, (ucm.shape[1] + 1) // 2)
  if shape is not None and size != shape:
    raise ValueError(f"{where}: feature 'ucm' has shape {ucm.shape}, expected {(2 * shape[0] - 1, 2 * shape[1] - 1)} "
                     f"for the {shape[0]}x{shape[1]} segmentations")
  fields = {"ucm": ucm, "instances": None, "instance_classes": None}
  if "instances" in record and neighbourhood:
    instances = np.asarray(record["instances"])
    if instances.shape != size:
      raise ValueError(f"{where}: feature 'instances' has shape {instances.shape}, expected {size} (from 'ucm')")
    fields["instances"] = instances
    if "instance_classes" in record:  # [k] = class of instance k, [0] = background
      classes = np.asarray(record["instance_classes"]).ravel()
      present = np.unique(instances[instances != 0])
      if present.size and present.max() >= classes.size:
        raise ValueError(f"{where}: feature 'instance_classes' has {classes.size} entries but 'instances' "
                         f"holds id {present.max()}")
      fields["instance_classes"] = {int(i): int(classes[i]) for i in present}
  return fields


def _read_tfds(spec: str, data_dir: str | None, *, neighbourhood: bool = True
               ) -> tuple[dict[str, bsds_io.GroundTruth], dict[str, LevelTruth]]:
  """BSDS ground truth of `tfds:NAME/SPLIT`, and its hierarchical ground truth when it has `ucm`."""
  name_split = spec[len(TFDS_PREFIX):]
  if "/" not in name_split:
    raise ValueError(f"--ground-truth: expected 'tfds:NAME/SPLIT', got {spec!r}")
  name, split = name_split.rsplit("/", 1)  # NAME may hold a config: synthetic_scenes/tiny
  import importlib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from jhseg.data import sources  # pylint: disable=g-import-not-at-top
  base = name.split("/")[0].split(":")[0]
  if base in sources.LOCAL_BUILDERS:  # register this repository's builders with TFDS
    importlib.import_module(sources.LOCAL_BUILDERS[base])
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # noqa: BLE001 -- TFDS raises many types
    raise FileNotFoundError(f"--ground-truth: cannot open TFDS dataset {name!r} split {split!r} "
                            f"(data_dir={data_dir}): {e}") from e
  out = {}
  hierarchical = {}
  for k in range(len(source)):
    record = source[k]
    has_ucm = "ucm" in record
    # A hierarchical dataset needs neither ids (the record index) nor BSDS annotations (from its ucm).
    needed = ("image/id", "segmentations", "boundaries") if not has_ucm else ()
    for field in needed:
      if field not in record:
        raise KeyError(f"--ground-truth: {spec} record {k} has no feature {field!r} (has {sorted(record)})")
    image_id = record["image/id"] if "image/id" in record else str(k)
    image_id = image_id.decode() if isinstance(image_id, bytes) else str(image_id)
    if image_id in out:
      raise ValueError(f"--ground-truth: {spec} has two records with image id {image_id!r}")
    if "segmentations" in record and "boundaries" in record:
      out[image_id] = bsds_io.ground_truth_from_arrays(
          list(record["segmentations"]), list(record["boundaries"]), source=f"{spec} id {image_id}")
    if has_ucm:
      shape = out[image_id].shape if image_id in out else None
      hierarchical[image_id] = _level_truth_fields(record, k, spec, image_id, shape, neighbourhood)
      if image_id not in out:
        out[image_id] = _ground_truth_from_ucm(hierarchical[image_id]["ucm"], f"{spec} id {image_id}")
  if not out:
    raise ValueError(f"--ground-truth: {spec} is empty")
  levels = tuple(float(x) for x in np.unique(np.concatenate(
      [f["ucm"][f["ucm"] > 0] for f in hierarchical.values()] or [np.zeros(0, np.float32)])))
  if hierarchical and not levels:
    raise ValueError(f"--ground-truth: {spec} feature 'ucm' has no positive value (no contour) in any record")
  return out, {i: LevelTruth(levels=levels, **f) for i, f in hierarchical.items()}


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


def _warn_about_predictions_without_ground_truth(folder: pathlib.Path, ground_truth_ids,
                                                  kind: str) -> None:
  """Prediction files whose id is no ground-truth image are not scored: say so, with the count."""
  extensions = ({".mat", ".npy", ".png"} if kind == "auto"
                else {bsds_io.PREDICTION_EXTENSIONS[kind]})
  extra = sorted({f.stem for f in folder.iterdir()
                  if f.suffix in extensions and f.is_file()} - set(ground_truth_ids))
  if extra:
    warnings.warn(f"--predictions {folder}: {len(extra)} prediction file(s) have no ground-truth "
                  f"image and are ignored; first ids: {extra[:5]}", stacklevel=3)


def make_tasks(predictions: str | os.PathLike, ground_truth: str, *, kind: str = "auto",
               num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS,
               max_distance: float = boundary.DEFAULT_MAX_DISTANCE, thin: bool = True,
               matcher: str = matching.DEFAULT_MATCHER, tfds_data_dir: str | None = None,
               neighbourhood: bool = True, fop: bool = True,
               level_matching: str = "bsds") -> list[ImageTask]:
  """One task per ground-truth image, in the official (ASCII-sorted file name) order.

  `neighbourhood`: for TFDS ground truth with `ucm` and `instances`, score LRF/FDF
  with the object-neighbourhood protocol (False: over whole images).
  """
  if kind not in KINDS:
    raise ValueError(f"unknown --kind {kind!r}; valid kinds: {', '.join(KINDS)}")
  if matcher not in matching.MATCHERS:
    raise ValueError(f"unknown --matcher {matcher!r}; valid matchers: {', '.join(matching.MATCHERS)}")
  if level_matching not in ucm_evaluation.LEVEL_MATCHINGS:
    raise ValueError(f"unknown --level-matching {level_matching!r}; valid: "
                     f"{', '.join(ucm_evaluation.LEVEL_MATCHINGS)}")
  predictions = pathlib.Path(predictions)
  if not predictions.is_dir():
    raise FileNotFoundError(f"--predictions: {predictions} is not a folder")
  level_truths = {}
  if ground_truth.startswith(TFDS_PREFIX):
    gts, level_truths = _read_tfds(ground_truth, tfds_data_dir, neighbourhood=neighbourhood)
  else:
    gts = _ground_truth_from_folder(pathlib.Path(ground_truth))
  _warn_about_predictions_without_ground_truth(predictions, gts, kind)
  tasks = []
  for image_id in sorted(gts):
    path, image_kind = _prediction_file(predictions, image_id, kind)
    tasks.append(ImageTask(image_id, path, image_kind, gts[image_id], num_thresholds, max_distance, thin, matcher,
                           level_truths.get(image_id), fop=fop, level_matching=level_matching))
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
  levels = None
  data = pred.data
  if pred.kind == "pb" and data.shape == (2 * h + 1, 2 * w + 1):  # a .npy ucm2
    pred = bsds_io.Prediction("ucm2", data)
  if pred.kind == "pb" and data.shape == (2 * h - 1, 2 * w - 1) and (h, w) != (1, 1):  # a .npy interpixel UCM
    from jhseg import grid  # pylint: disable=g-import-not-at-top
    data = _grid_float64(grid.interpixel_to_ucm2, data)  # frame replicated, as BSDS ucm2 files
    pred = bsds_io.Prediction("ucm2", data)
  if pred.kind == "ucm2":
    if data.shape != (2 * h + 1, 2 * w + 1):
      raise bsds_io.BSDSFormatError(
          f"{task.prediction}: ucm2 of shape {data.shape}, expected {(2 * h + 1, 2 * w + 1)} for ground truth {h}x{w}")
    _warn_if_frame_not_replicated(data, task.prediction)
    if task.level_truth is None:
      b = boundary.counts_from_ucm2(data, gt.boundaries, num_thresholds=task.num_thresholds, **opts)
    else:  # PR with LRF/FDF: one matching, the paper's protocol and sweep
      levels = level_counts(data, task.level_truth, num_thresholds=task.num_thresholds,
                            max_distance=task.max_distance, matcher=task.matcher,
                            level_matching=task.level_matching)
      b = levels.boundary[0]
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
  fop = fop_counts(pred.kind, data, gt, num_thresholds=task.num_thresholds) if task.fop else None
  return ImageCounts(task.image_id, b, r, levels if pred.kind == "ucm2" else None, fop)


def level_counts(ucm2: np.ndarray, truth: LevelTruth, *,
                 num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS,
                 max_distance: float = boundary.DEFAULT_MAX_DISTANCE,
                 matcher: str = matching.DEFAULT_MATCHER, thin: bool = False,
                 level_matching: str = "bsds") -> ucm_evaluation.UcmEvaluation:
  """PR, LRF and FDF counts of one predicted ucm2 against a hierarchical ground truth.

  Sweep `level_recovery.sweep_thresholds(num_thresholds)` (0, the BSDS thresholds, 1);
  contours at t are the edges with weight >= t (`level_recovery.contours_at`); the
  object-neighbourhood protocol when `truth.instances` is set, per-class crops with
  `truth.instance_classes` (`jhseg.metrics.ucm_evaluation`).
  """
  from jhseg import grid  # pylint: disable=g-import-not-at-top
  pred_h, pred_v = _interpixel_edges(_grid_float64(grid.ucm2_to_interpixel, ucm2))
  truth_h, truth_v = _interpixel_edges(truth.ucm)
  accumulator = ucm_evaluation.UcmEvaluation(
      levels=truth.levels, thresholds=level_recovery.sweep_thresholds(num_thresholds),
      max_distance=max_distance, matcher=matcher, thin=thin, level_matching=level_matching)
  accumulator.add(pred_h, pred_v, truth_h, truth_v, instances=truth.instances,
                  instance_classes=truth.instance_classes)
  return accumulator


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
  # TensorFlow (TFDS ground truth) is loaded, whose threads make fork unsafe, and for hierarchical ground
  # truth, whose jhseg.grid conversions started JAX's backend (forked children of it hang).
  fork_ok = "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules
  fork_ok = fork_ok and all(t.level_truth is None for t in tasks)
  method = "fork" if fork_ok else "spawn"
  with multiprocessing.get_context(method).Pool(workers) as pool:
    return list(tqdm(pool.imap(evaluate_image, tasks, chunksize=1), **bar))


# ----------------------------------------------------------------------------- outputs


def _write_tables(output: pathlib.Path, tables: dict[str, tuple[str, Any]]) -> list[pathlib.Path]:
  """Writes each {file name: (printf format of a row, rows)} into `output`; returns the paths."""
  paths = []
  for name, (fmt, rows) in tables.items():
    with open(output / name, "w") as f:
      for row in np.atleast_2d(np.asarray(rows, np.float64)):
        f.write(fmt % tuple(row) + "\n")
    paths.append(output / name)
  return paths


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
  return _write_tables(output, files)


def summary_dict(counts: Sequence[ImageCounts], bdry: boundary.BoundaryResult,
                 reg: region.RegionResult | None,
                 levels: ucm_evaluation.UcmEvaluation | None = None) -> dict:
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
  if levels is not None:
    out["level_recovery"] = level_recovery_dict(levels)
  return out


def level_recovery_dict(levels: ucm_evaluation.UcmEvaluation) -> dict:
  """JSON form of the pooled LRF/FDF curves: per level and per class (with the class's
  boundary ODS/OIS/AP), and the tables of `level_recovery.summary`."""
  result = levels.result()
  names = lambda values: [f"{level:g}" for level in values]  # JSON keys: "0.5", "1"

  def curves(lrf, fdf) -> dict:
    rows = [list(map(_nan_to_none, row)) for row in np.asarray(lrf).tolist()]
    return {"lrf": dict(zip(names(result["levels"]), rows)), "fdf": np.asarray(fdf).tolist()}

  table = level_recovery.summary(result)
  per_level = lambda d: dict(zip(names(d), map(_nan_to_none, d.values())))
  one = lambda t: {"survival": per_level(t["survival"]), "mean_lrf": per_level(t["mean_lrf"]),
                   "mean_fdf": t["mean_fdf"]}
  return {
      "num_images": result["num_images"],
      "levels": list(result["levels"]),
      "thresholds": np.asarray(result["thresholds"]).tolist(),
      **curves(result["lrf"], result["fdf"]),
      "summary": one(table),
      "per_class": {str(class_id): {"num_instances": c["num_instances"], **curves(c["lrf"], c["fdf"]),
                                    "summary": one(table["per_class"][class_id]),
                                    "boundary": _boundary_scores(c["boundary"])}
                    for class_id, c in result["per_class"].items()},
  }


def _boundary_scores(result: boundary.BoundaryResult) -> dict:
  return {"ods_f": result.ods_f, "ois_f": result.ois_f, "ap": result.ap}


def _nan_to_none(value: float) -> float | None:
  """nan (LRF of a level without ground-truth edges, e.g. in a class without parts) -> JSON null."""
  return None if value != value else value


def collect_levels(counts: Sequence[ImageCounts]) -> ucm_evaluation.UcmEvaluation | None:
  """The per-image LRF/FDF counts merged (None when no image has them)."""
  scored = [c.levels for c in counts if c.levels is not None]
  if not scored:
    return None
  if len(scored) != len(counts):
    missing = [c.image_id for c in counts if c.levels is None]
    raise ValueError(f"LRF/FDF: images {missing[:5]} have no UCM prediction (kinds ucm2, npy ucm2/interpixel, "
                     f"png ucm2) but others do; use one --kind")
  total = ucm_evaluation.UcmEvaluation(levels=scored[0].levels, thresholds=scored[0].thresholds)
  for accumulator in scored:
    total.merge(accumulator)
  return total


def _level_names(levels: Sequence[float]) -> dict[float, str] | None:
  """The 3-level convention of the builders: 1 = objects, 0.5 = parts."""
  return {1.0: "objects", 0.5: "parts"} if tuple(levels) == (0.5, 1.0) else None


def write_level_figures(output: pathlib.Path, levels: ucm_evaluation.UcmEvaluation,
                        title: str) -> list[pathlib.Path]:
  """`lrf_fdf.png`, and `per_class.png` when per-class crops were scored."""
  from jhseg.viz import curves  # pylint: disable=g-import-not-at-top
  result = levels.result()
  names = _level_names(result["levels"])
  paths = [pathlib.Path(curves.save_lrf_fdf_png(output / "lrf_fdf.png", result, level_names=names, title=title))]
  if result["per_class"]:
    paths.append(pathlib.Path(curves.save_per_class_png(output / "per_class.png", result, level_names=names)))
  return paths


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


# ----------------------------------------------------------------------------- Fop


def fop_counts(kind: str, data, gt: bsds_io.GroundTruth, *,
               num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS) -> fop_lib.FopAccumulator | None:
  """One image's Fop sweep against every annotator; None for soft boundary maps.

  A ucm2 is cut at the region benchmark's thresholds (the regions of `ucm2 <= t`, as SEISM's
  `ucm2 > t` contours); a segmentation list gives one position per segmentation (1..K).
  """
  if kind == "ucm2":
    thresholds = boundary.bsds_thresholds(num_thresholds)
    segmentations = region.segmentations_from_ucm2(data, thresholds)
  elif kind == "segs":
    thresholds, segmentations = np.arange(1, len(data) + 1, dtype=np.float64), data
  else:
    return None
  accumulator = fop_lib.FopAccumulator(thresholds=thresholds)
  accumulator.add_segmentations(segmentations, gt.segmentations)
  return accumulator


def collect_fop(counts: Sequence[ImageCounts]) -> dict | None:
  """`FopAccumulator.result()` over all images (None when no image has a Fop sweep)."""
  scored = [c.fop for c in counts if c.fop is not None]
  if not scored:
    return None
  if len(scored) != len(counts):
    raise ValueError("Fop: some images are soft boundary maps, others UCMs or segmentations; use one --kind")
  total = fop_lib.FopAccumulator(thresholds=scored[0].thresholds, **scored[0].options)
  for accumulator in scored:
    total.merge(accumulator)
  return total.result()


def fop_summary(result: dict, image_ids: Sequence[str]) -> dict:
  """summary.json's `fop`: the eval_fop.txt values, the per-threshold curve, per-image bests."""
  curve = result["per_threshold"]
  return {
      "ods_threshold": result["ods"]["threshold"], "ods_recall": result["ods"]["recall"],
      "ods_precision": result["ods"]["precision"], "ods_f": result["ods"]["f"],
      "ois_recall": result["ois"]["recall"], "ois_precision": result["ois"]["precision"],
      "ois_f": result["ois"]["f"], "ap": result["ap"],
      **{k: np.asarray(curve[name]).tolist() for k, name in (
          ("thresholds", "threshold"), ("recall", "recall"), ("precision", "precision"), ("f", "f"))},
      "per_image": [{"id": i, "best_threshold": t, "precision": p, "recall": r, "f": f}
                    for i, (t, p, r, f) in zip(image_ids, result["per_image"].tolist())],
  }


def write_fop_files(output: pathlib.Path, summary: dict) -> list[pathlib.Path]:
  """eval_fop.txt, eval_fop_thr.txt, eval_fop_img.txt, in the layouts of eval_bdry*.txt."""
  keys = ("ods_threshold", "ods_recall", "ods_precision", "ods_f", "ois_recall", "ois_precision",
          "ois_f", "ap")
  per_image = [[k + 1, p["best_threshold"], p["recall"], p["precision"], p["f"]]
               for k, p in enumerate(summary["per_image"])]
  files = {
      "eval_fop.txt": ("%10g %10g %10g %10g %10g %10g %10g %10g", [[summary[k] for k in keys]]),
      "eval_fop_thr.txt": ("%10g %10g %10g %10g",
                           np.c_[summary["thresholds"], summary["recall"], summary["precision"], summary["f"]]),
      "eval_fop_img.txt": ("%10d %10g %10g %10g %10g", per_image),
  }
  return _write_tables(output, files)


def evaluate_folder(predictions: str | os.PathLike, ground_truth: str, *, workers: int = 1, progress: bool = False,
                    **task_options) -> tuple[boundary.BoundaryResult, region.RegionResult | None]:
  """Python entry point: `make_tasks(predictions, ground_truth, **task_options)`, scored and collected."""
  tasks = make_tasks(predictions, ground_truth, **task_options)
  return collect(evaluate_tasks(tasks, workers=workers, progress=progress))


def run(args: argparse.Namespace) -> dict:
  """Evaluates and writes every output; returns the JSON summary."""
  tasks = make_tasks(args.predictions, args.ground_truth, kind=args.kind, num_thresholds=args.thresholds,
                     max_distance=args.max_distance, thin=not args.no_thin, matcher=args.matcher,
                     tfds_data_dir=args.tfds_data_dir, neighbourhood=not args.no_neighbourhood,
                     fop=not args.no_fop, level_matching=args.level_matching)
  counts = evaluate_tasks(tasks, workers=args.workers, progress=not args.quiet)
  bdry, reg = collect(counts)
  levels = collect_levels(counts)
  fop_result = collect_fop(counts)
  if levels is None and any(t.level_truth is not None for t in tasks):
    warnings.warn("LRF/FDF skipped: the ground truth has 'ucm' but the predictions are no UCMs "
                  "(soft boundary maps or segmentation lists)", stacklevel=2)
  output = pathlib.Path(args.output)
  output.mkdir(parents=True, exist_ok=True)
  write_official_files(output, bdry, reg)
  summary = summary_dict(counts, bdry, reg, levels)
  if fop_result is not None:
    summary["fop"] = fop_summary(fop_result, [c.image_id for c in counts])
    write_fop_files(output, summary["fop"])
  (output / "summary.json").write_text(json.dumps(summary, indent=2))
  from jhseg.viz import pr_curve  # pylint: disable=g-import-not-at-top
  pr_curve.save_pr_curve_png(output / "pr_curve.png", {"predictions": (bdry.recall, bdry.precision)},
                             ods_points={"predictions": (bdry.ods_recall, bdry.ods_precision)},
                             title=f"BSDS boundaries, {len(counts)} images")
  if levels is not None:
    protocol = "object neighbourhood" if any(t.level_truth.instances is not None for t in tasks) else "whole images"
    write_level_figures(output, levels, f"LRF / FDF, {len(counts)} images, {protocol}")
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
                           "'segmentations' (K,H,W), 'boundaries' (K,H,W) (e.g. tfds:bsds500/test from tfds_builders.bsds500), "
                           "or a hierarchical TFDS dataset with an interpixel 'ucm' (2H-1,2W-1) feature (e.g. "
                           "tfds:synthetic_scenes/tiny/test, tfds:ultrametric_pascal_part/test): UCM predictions then "
                           "also get LRF per level and FDF; without 'image/id' the ids are the record indices 0, 1, ...; "
                           "without 'segmentations' the BSDS benchmarks use the finest ucm segmentation")
  parser.add_argument("--output", required=True, metavar="DIR",
                      help="folder for eval_*.txt (official names and formats), summary.json and pr_curve.png; "
                           "with a hierarchical (tfds 'ucm') ground truth also lrf_fdf.png (and per_class.png)")
  parser.add_argument("--kind", choices=KINDS, default="auto",
                      help="prediction format; auto: by extension, .mat files by their variable")
  parser.add_argument("--thresholds", type=int, default=boundary.DEFAULT_NUM_THRESHOLDS, metavar="N",
                      help="number of thresholds for ucm2/png/npy maps: linspace(1/(N+1), 1-1/(N+1), N); "
                           "segmentation lists use one threshold per segmentation; UCMs against a hierarchical "
                           "(tfds 'ucm') ground truth: those N plus 0 and 1 (contours: weights >= t)")
  parser.add_argument("--max-distance", "--max_distance", dest="max_distance", type=float,
                      default=boundary.DEFAULT_MAX_DISTANCE,
                      help="boundary matching tolerance, as a fraction of the image diagonal")
  parser.add_argument("--matcher", choices=tuple(matching.MATCHERS), default=matching.DEFAULT_MATCHER,
                      help="boundary pixel matcher: 'bsds' = the official correspondPixels cost model solved exactly "
                           "(SciPy sparse LAPJV), 'higra' = Higra's match_pixels_image_2d (max cardinality, then min "
                           "distance; ~3x slower); see jhseg.hierarchy.matching")
  parser.add_argument("--no-thin", "--no_thin", dest="no_thin", action="store_true",
                      help="do not thin the binarised machine boundaries (the official benchmark thins); UCMs "
                           "against a hierarchical (tfds 'ucm') ground truth are never thinned, see "
                           "jhseg.metrics.ucm_evaluation")
  parser.add_argument("--workers", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                      help="worker processes over images (1: evaluate in this process)")
  parser.add_argument("--tfds-data-dir", "--tfds_data_dir", dest="tfds_data_dir", default=None, metavar="DIR",
                      help="TFDS data_dir for a tfds: ground truth (None: TFDS's default, ~/tensorflow_datasets)")
  parser.add_argument("--no-neighbourhood", "--no_neighbourhood", dest="no_neighbourhood", action="store_true",
                      help="PR, LRF and FDF of UCMs over whole images; by default, when the TFDS ground truth has "
                           "'instances', the object-neighbourhood protocol of Lapertot et al. applies to all three "
                           "(object masks dilated by 20 px, contours outside dropped, non-closed contours dropped) "
                           "and, with 'instance_classes', per-class crops are scored (per_class.png, per-class "
                           "ODS/OIS/AP in summary.json)")
  parser.add_argument("--level-matching", "--level_matching", dest="level_matching",
                      choices=ucm_evaluation.LEVEL_MATCHINGS, default="bsds",
                      help="LRF/FDF of UCMs against a hierarchical (tfds 'ucm') ground truth: 'bsds' = "
                           "boundary pixels matched by the PR curves' correspondence (tolerance "
                           "--max-distance), 'exact' = edges counted only where they coincide exactly")
  parser.add_argument("--no-fop", "--no_fop", dest="no_fop", action="store_true",
                      help="skip the objects-and-parts F-measure Fop (ODS/OIS/AP, eval_fop*.txt) of UCMs and "
                           "segmentation lists (about 0.8 CPU s per 481x321 ucm2 at 99 thresholds, twice the region "
                           "benchmark's)")
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
  if "fop" in summary:
    f = summary["fop"]
    print(f"Fop ODS={f['ods_f']:.4f} OIS={f['ois_f']:.4f} AP={f['ap']:.4f}")
  if "level_recovery" in summary:
    s = summary["level_recovery"]["summary"]
    print("LRF mean over t: " + ", ".join(f"level {k} {v:.4f}" for k, v in s["mean_lrf"].items() if v is not None)
          + f"; FDF mean {s['mean_fdf']:.4f}")
  print(f"wrote {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
