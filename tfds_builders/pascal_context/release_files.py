"""Readers of the PASCAL-Context release (Mottaghi et al., CVPR 2014) and of VOC2010.

trainval.tar.gz (https://cs.stanford.edu/~roozbeh/pascal-context/) unpacks to

  trainval/<id>.mat      MATLAB v5 file with the variable LabelMap: (H, W) uint16 class
                         ids, 1-459 as numbered in labels.txt, 0 for unlabelled pixels
  labels.txt             one "<id>: <name>" line per class (459 lines)

and VOCtrainval_03-May-2010.tar (Everingham et al.) to

  VOCdevkit/VOC2010/JPEGImages/<id>.jpg
  VOCdevkit/VOC2010/ImageSets/Main/{train,val}.txt   one id per line (4998 / 5105): the
                                                     10103 images PASCAL-Context labels
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

import numpy as np

from tfds_builders import manual_dir as manual_dir_lib

CONTEXT_ARCHIVE = "trainval.tar.gz (PASCAL-Context)"
VOC_ARCHIVE = "VOCtrainval_03-May-2010.tar"
_LABEL_LINE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


@dataclasses.dataclass(frozen=True)
class Releases:
  context: pathlib.Path  # manual_dir: trainval/, labels.txt
  voc: pathlib.Path      # manual_dir/VOCdevkit/VOC2010


def find_releases(manual_dir) -> Releases:
  """Both release roots inside `manual_dir`, or a FileNotFoundError naming what is missing."""
  manual_dir = pathlib.Path(manual_dir)
  voc = manual_dir / "VOCdevkit" / "VOC2010"
  manual_dir_lib.require_unpacked(
      manual_dir, [(manual_dir / "trainval", CONTEXT_ARCHIVE),
                   (manual_dir / "labels.txt", CONTEXT_ARCHIVE),
                   (voc / "JPEGImages", VOC_ARCHIVE), (voc / "ImageSets" / "Main", VOC_ARCHIVE)],
      readme="tfds_builders/pascal_context/README.md")
  return Releases(context=manual_dir, voc=voc)


def read_class_names(path: pathlib.Path) -> dict[int, str]:
  """{class id: name} of labels.txt; a ValueError names the line that is not "<id>: <name>"."""
  names = {}
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    match = _LABEL_LINE.match(line)
    if not match:
      raise ValueError(f"{path}:{number}: expected '<id>: <name>', got {line!r}")
    class_id = int(match.group(1))
    if class_id < 1 or class_id in names:
      raise ValueError(f"{path}:{number}: class id {class_id} is below 1 or repeated")
    names[class_id] = match.group(2)
  if not names:
    raise ValueError(f"{path}: no class")
  return names


def read_label_map(path: pathlib.Path, *, max_class: int) -> np.ndarray:
  """(H, W) int32 class ids of trainval/<id>.mat (variable LabelMap, 0 = unlabelled)."""
  from scipy import io as sio  # pylint: disable=g-import-not-at-top

  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing PASCAL-Context annotation (trainval/<id>.mat)")
  content = sio.loadmat(path)
  if "LabelMap" not in content:
    fields = sorted(k for k in content if not k.startswith("__"))
    raise ValueError(f"{path}: no variable 'LabelMap' (has {fields})")
  labels = np.asarray(content["LabelMap"])
  if labels.ndim != 2 or labels.dtype.kind not in "ui":
    raise ValueError(f"{path}: LabelMap must be a 2-D integer array (the release's uint16); "
                     f"got {labels.dtype} {labels.shape}")
  labels = labels.astype(np.int32)
  if labels.min() < 0 or labels.max() > max_class:
    raise ValueError(f"{path}: LabelMap values must be in [0, {max_class}] (labels.txt ids, 0 "
                     f"unlabelled); got [{labels.min()}, {labels.max()}]")
  return labels


def connected_regions(labels: np.ndarray) -> np.ndarray:
  """Regions of a class map for the segmentation benchmarks (DEL, Sec. 3.3: "connectivity
  labeling"): 4-connected components of equal class ids, numbered 1, 2, ... in raster
  order of their first pixel; unlabelled pixels (class 0) get 0, no region."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  regions = np.zeros(labels.shape, np.int32)
  count = 0
  for class_id in np.unique(labels):
    if class_id == 0:
      continue
    components, n = ndimage.label(labels == class_id)
    regions[components > 0] = components[components > 0] + count
    count += n
  # Renumber by first pixel in raster order, so the numbering does not depend on class ids.
  values, first = np.unique(regions.ravel(), return_index=True)
  keep = values != 0
  in_order = values[keep][np.argsort(first[keep])]
  lookup = np.zeros(count + 1, np.int32)
  lookup[in_order] = np.arange(1, in_order.size + 1)
  return lookup[regions]
