"""Readers of the two official releases: PASCAL VOC 2012 segmentation and SBD.

VOCtrainval_11-May-2012.tar (Everingham et al.) unpacks to

  VOCdevkit/VOC2012/JPEGImages/<id>.jpg
  VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette ('P') PNG: class index per pixel,
                                                   0 background, 1-20 classes, 255 void
  VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt   one id per line

benchmark.tgz, the Semantic Boundaries Dataset (Hariharan et al., ICCV 2011), unpacks to

  benchmark_RELEASE/dataset/img/<id>.jpg
  benchmark_RELEASE/dataset/cls/<id>.mat           MATLAB struct GTcls with fields
                                                   Boundaries (20x1 cell, sparse),
                                                   Segmentation (HxW, 0 background, 1-20),
                                                   CategoriesPresent
  benchmark_RELEASE/dataset/{train,val}.txt        one id per line (SBD's own split)
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from tfds_builders import manual_dir as manual_dir_lib

VOID = 255
NUM_CLASSES = 21  # background + 20 VOC classes

VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
SBD_ARCHIVE = "benchmark.tgz (SBD)"


@dataclasses.dataclass(frozen=True)
class Releases:
  voc: pathlib.Path  # .../VOCdevkit/VOC2012
  sbd: pathlib.Path  # .../benchmark_RELEASE/dataset


def find_releases(manual_dir) -> Releases:
  """Both release roots inside `manual_dir`, or a FileNotFoundError naming what is missing."""
  manual_dir = pathlib.Path(manual_dir)
  voc = manual_dir / "VOCdevkit" / "VOC2012"
  sbd = manual_dir / "benchmark_RELEASE" / "dataset"
  manual_dir_lib.require_unpacked(
      manual_dir, [(voc / "JPEGImages", VOC_ARCHIVE), (voc / "SegmentationClass", VOC_ARCHIVE),
                   (voc / "ImageSets" / "Segmentation", VOC_ARCHIVE), (sbd / "cls", SBD_ARCHIVE)],
      readme="tfds_builders/voc2012_sbd/README.md")
  return Releases(voc=voc, sbd=sbd)


def read_voc_label(path: pathlib.Path) -> np.ndarray:
  """(H, W) int32 class indices of a VOC SegmentationClass palette PNG."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing VOC segmentation (SegmentationClass/<id>.png)")
  with Image.open(path) as image:
    if image.mode != "P":
      raise ValueError(f"{path}: expected a palette ('P' mode) PNG of class indices as in the VOC "
                       f"release; got mode {image.mode!r}")
    labels = np.asarray(image).astype(np.int32)
  _check_values(labels, path, "pixel values", allow_void=True)
  return labels


def read_sbd_label(path: pathlib.Path) -> np.ndarray:
  """(H, W) int32 class indices of an SBD cls/<id>.mat (GTcls.Segmentation)."""
  from scipy import io as sio  # pylint: disable=g-import-not-at-top

  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing SBD class annotation (cls/<id>.mat)")
  mat = sio.loadmat(str(path))
  if "GTcls" not in mat:
    raise ValueError(f"{path}: expected a MATLAB variable 'GTcls'; found {sorted(k for k in mat if not k.startswith('__'))}")
  gt = mat["GTcls"]
  if gt.dtype.names is None or "Segmentation" not in gt.dtype.names:
    raise ValueError(f"{path}: GTcls must be a struct with field 'Segmentation'; fields: "
                     f"{gt.dtype.names}")
  labels = np.asarray(gt["Segmentation"].ravel()[0])
  if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: GTcls.Segmentation must be an integer (H, W) map; got "
                     f"{labels.dtype} {labels.shape}")
  labels = labels.astype(np.int32)
  _check_values(labels, path, "GTcls.Segmentation values", allow_void=False)
  return labels


def _check_values(labels: np.ndarray, path: pathlib.Path, what: str, *, allow_void: bool) -> None:
  valid = (labels >= 0) & (labels < NUM_CLASSES)
  if allow_void:
    valid |= labels == VOID
  if not valid.all():
    bad = np.unique(labels[~valid])[:5]
    expected = "0-20" + (" or 255" if allow_void else "")
    raise ValueError(f"{path}: {what} must be class indices {expected}; found {bad.tolist()}")


def image_path(releases: Releases, image_id: str) -> pathlib.Path:
  """VOC2012 JPEGImages/<id>.jpg, else SBD img/<id>.jpg (the same VOC image)."""
  for folder in (releases.voc / "JPEGImages", releases.sbd / "img"):
    path = folder / f"{image_id}.jpg"
    if path.is_file():
      return path
  raise FileNotFoundError(f"image {image_id!r}: neither {releases.voc / 'JPEGImages'}/{image_id}.jpg "
                          f"nor {releases.sbd / 'img'}/{image_id}.jpg exists")
