"""Readers for the BSDS500 benchmark's file formats.

Ground truth (`groundTruth/<id>.mat`, MATLAB v5): a 1xK cell `groundTruth`, one
struct per human annotator, with fields `Segmentation` (uint16 labels from 1)
and `Boundaries` (logical, image-size boundaries of that segmentation).

Predictions, one file per image, named `<id>.<ext>`:

- `ucm2` (`.mat` with variable `ucm2`): ultrametric contour map in BSDS's
  double-size (2H+1)x(2W+1) format; both benchmarks apply.
- `segs` (`.mat` with variable `segs`): a cell of HxW label maps (a hierarchy
  given as segmentations, fine to coarse); both benchmarks apply, one
  "threshold" per segmentation.
- `png`: 8-bit (or 16-bit) soft boundary map, scaled to [0, 1] by the dtype's
  maximum (the official code reads 8-bit maps as `double(imread(f)) / 255`);
  boundary benchmark only.
- `npy`: a float array, either an HxW soft boundary map in [0, 1] (boundary
  benchmark) or a (2H+1)x(2W+1) `ucm2` (both benchmarks); which one is decided
  by the shape against the ground truth, in `jhseg.evaluate`.

Values are checked: a `ucm2` or `npy` map with a NaN or infinite value, or a value
outside [0, 1] (the benchmark's thresholds lie in (0, 1), so e.g. a 0-255 map would
silently count every edge as a contour), and `segs` with non-finite or non-integer
labels raise BSDSFormatError naming the file.
"""
import dataclasses
import os
import pathlib
from typing import Sequence

import numpy as np
import scipy.io

PREDICTION_KINDS = ("ucm2", "segs", "png", "npy")
PREDICTION_EXTENSIONS = {"ucm2": ".mat", "segs": ".mat", "png": ".png", "npy": ".npy"}


class BSDSFormatError(ValueError):
  """A benchmark file is missing, unreadable or not in the expected format."""


@dataclasses.dataclass(frozen=True)
class GroundTruth:
  """All human annotations of one image.

  Attributes:
    segmentations: K label maps, int32 HxW, labels from 1 as in the release.
    boundaries: K boolean HxW boundary maps (the release's `Boundaries`).
  """
  segmentations: tuple[np.ndarray, ...]
  boundaries: tuple[np.ndarray, ...]

  @property
  def shape(self) -> tuple[int, int]:
    return self.segmentations[0].shape


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One image's prediction.

  Attributes:
    kind: "ucm2", "segs" or "pb" (soft boundary map; from png or npy).
    data: the ucm2 array (float64), the list of label maps (int32) or the soft
      boundary map (float64 in [0, 1]).
  """
  kind: str
  data: np.ndarray | tuple[np.ndarray, ...]


def _loadmat(path: os.PathLike | str) -> dict:
  path = pathlib.Path(path)
  if not path.is_file():
    raise BSDSFormatError(f"{path}: file not found")
  try:
    return scipy.io.loadmat(path)
  except NotImplementedError as e:  # MATLAB v7.3 (HDF5) files
    raise BSDSFormatError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; save with -v7 ({e})") from e
  except Exception as e:  # noqa: BLE001 -- scipy raises several types for corrupt files
    raise BSDSFormatError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e


def _check_unit_range(path: pathlib.Path, what: str, array: np.ndarray) -> np.ndarray:
  """`array` if every value is finite and in [0, 1]; else BSDSFormatError naming the file."""
  finite = np.isfinite(array)
  if not finite.all():
    where = tuple(int(i) for i in np.argwhere(~finite)[0])
    raise BSDSFormatError(f"{path}: {what} has {int((~finite).sum())} non-finite values (NaN or "
                          f"inf), the first at index {where}; expected values in [0, 1]")
  if array.size and (array.min() < 0 or array.max() > 1):
    raise BSDSFormatError(f"{path}: {what} has values in [{array.min():g}, {array.max():g}]; "
                          f"expected [0, 1] (the benchmark thresholds lie in (0, 1): rescale it)")
  return array


def _integer_labels(path: pathlib.Path, k: int, labels) -> np.ndarray:
  """Cell `segs{k+1}` as int32; non-finite or fractional labels raise BSDSFormatError."""
  labels = np.asarray(labels)
  if labels.dtype.kind == "f":
    if not np.isfinite(labels).all() or not np.array_equal(labels, np.round(labels)):
      raise BSDSFormatError(f"{path}: segs{{{k + 1}}} holds non-finite or non-integer labels; "
                            f"expected integer label maps")
  elif labels.dtype.kind not in "iub":
    raise BSDSFormatError(f"{path}: segs{{{k + 1}}} has dtype {labels.dtype}; expected integer "
                          f"label maps")
  return labels.astype(np.int32)


def _cell_items(value: np.ndarray) -> list:
  return list(np.asarray(value, dtype=object).ravel(order="F"))


def ground_truth_from_arrays(segmentations: Sequence[np.ndarray],
                             boundaries: Sequence[np.ndarray], *, source: str = "ground truth") -> GroundTruth:
  """Validates and packs K annotations (shared by the .mat and TFDS readers)."""
  segs = tuple(np.asarray(s).astype(np.int32) for s in segmentations)
  bdrs = tuple(np.asarray(b).astype(bool) for b in boundaries)
  if not segs:
    raise BSDSFormatError(f"{source}: no annotations")
  if len(segs) != len(bdrs):
    raise BSDSFormatError(f"{source}: {len(segs)} segmentations but {len(bdrs)} boundary maps")
  shape = segs[0].shape
  for k, (s, b) in enumerate(zip(segs, bdrs)):
    if s.ndim != 2 or s.shape != shape or b.shape != shape:
      raise BSDSFormatError(
          f"{source}: annotation {k + 1} has Segmentation {s.shape} and Boundaries {b.shape}, "
          f"expected both {shape}")
  return GroundTruth(segs, bdrs)


def load_ground_truth(path: os.PathLike | str) -> GroundTruth:
  """Reads a BSDS500 `groundTruth/<id>.mat` file."""
  contents = _loadmat(path)
  if "groundTruth" not in contents:
    raise BSDSFormatError(f"{path}: no variable 'groundTruth' (found {sorted(k for k in contents if not k.startswith('__'))})")
  segs, bdrs = [], []
  for k, item in enumerate(_cell_items(contents["groundTruth"])):
    names = item.dtype.names or ()
    for field in ("Segmentation", "Boundaries"):
      if field not in names:
        raise BSDSFormatError(f"{path}: groundTruth{{{k + 1}}} has no field {field!r} (fields: {names})")
    segs.append(item["Segmentation"][0, 0])
    bdrs.append(item["Boundaries"][0, 0])
  return ground_truth_from_arrays(segs, bdrs, source=str(path))


def load_prediction(path: os.PathLike | str, kind: str) -> Prediction:
  """Reads one prediction file of the given kind (see the module docstring)."""
  path = pathlib.Path(path)
  if kind not in PREDICTION_KINDS:
    raise ValueError(f"unknown prediction kind {kind!r}; valid kinds: {', '.join(PREDICTION_KINDS)}")
  if not path.is_file():
    raise BSDSFormatError(f"{path}: file not found")
  if kind in ("ucm2", "segs"):
    contents = _loadmat(path)
    if kind not in contents:
      raise BSDSFormatError(
          f"{path}: no variable {kind!r} (found {sorted(k for k in contents if not k.startswith('__'))})")
    if kind == "ucm2":
      ucm2 = np.asarray(contents["ucm2"], np.float64)
      if ucm2.ndim != 2 or ucm2.shape[0] % 2 != 1 or ucm2.shape[1] % 2 != 1:
        raise BSDSFormatError(f"{path}: 'ucm2' must be a (2H+1)x(2W+1) matrix, got shape {ucm2.shape}")
      return Prediction("ucm2", _check_unit_range(path, "'ucm2'", ucm2))
    segs = tuple(_integer_labels(path, k, s) for k, s in enumerate(_cell_items(contents["segs"])))
    if not segs or any(s.ndim != 2 or s.shape != segs[0].shape for s in segs):
      raise BSDSFormatError(f"{path}: 'segs' must be a non-empty cell of equally sized 2-D label maps")
    return Prediction("segs", segs)
  if kind == "png":
    from PIL import Image  # pylint: disable=g-import-not-at-top
    try:
      with Image.open(path) as image:
        array = np.asarray(image)
    except Exception as e:  # noqa: BLE001
      raise BSDSFormatError(f"{path}: not a readable PNG image ({type(e).__name__}: {e})") from e
    if array.ndim != 2 or array.dtype not in (np.uint8, np.uint16):
      raise BSDSFormatError(
          f"{path}: expected a single-channel 8- or 16-bit PNG, got shape {array.shape} dtype {array.dtype}")
    return Prediction("pb", array.astype(np.float64) / np.iinfo(array.dtype).max)
  try:
    array = np.load(path, allow_pickle=False)
  except Exception as e:  # noqa: BLE001
    raise BSDSFormatError(f"{path}: not a readable .npy array ({type(e).__name__}: {e})") from e
  if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
    raise BSDSFormatError(f"{path}: expected a 2-D numeric array, got shape {array.shape} dtype {array.dtype}")
  return Prediction("pb", _check_unit_range(path, "the array", array.astype(np.float64)))
