"""TFDS builder `bsds500`: the Berkeley Segmentation Dataset 500 with every annotator.

Reads the official BSR release (`BSR_bsds500.tgz`, Arbelaez, Maire, Fowlkes &
Malik, PAMI 2011) from `manual_dir`, unpacked as is:

  manual_dir/BSR/BSDS500/data/images/{train,val,test}/<id>.jpg
  manual_dir/BSR/BSDS500/data/groundTruth/{train,val,test}/<id>.mat

(`manual_dir/BSDS500/data/...` is accepted too). Splits: train (200 images),
val (100), test (200), as released; the test split is the one the benchmark
reports on.

Features, one example per image (keyed by the image id):

- `image`: the release's JPEG bytes, stored unchanged (uint8 HxWx3; 481x321 or
  321x481).
- `image/id`: the image id, e.g. "2018" (file name without extension; the
  name `jhseg.evaluate` matches predictions with).
- `segmentations`: int32 (K, H, W), every human segmentation
  (`groundTruth{k}.Segmentation`, labels from 1) in the release's order; K is
  5 to 9 depending on the image. Stored as a zlib-encoded Tensor rather than
  uint16 PNGs: lossless, no 16-bit PNG round trip, and int32 as the
  repository's label maps.
- `boundaries`: bool (K, H, W), the release's `groundTruth{k}.Boundaries`
  (the thinned image-size boundaries of each segmentation, what the boundary
  benchmark matches against), same order.

Build: `tfds build bsds500 --imports=tfds_builders --manual_dir=DIR --data_dir=D`
(array_record is this builder's default, so `tfds.data_source` works). Every JPEG is
decoded and every groundTruth validated against it; a bad file fails the build naming it,
or is skipped with `bad_files="skip"` / `JHSEG_BAD_FILES=skip` (tfds_builders/bad_files.py).
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from jhseg.metrics import bsds_io
from tfds_builders import bad_files
from tfds_builders import builder_base

SPLITS = ("train", "val", "test")
_LAYOUT_CANDIDATES = ("BSR/BSDS500/data", "BSDS500/data")


def find_data_root(manual_dir: pathlib.Path) -> pathlib.Path:
  """The `BSDS500/data` folder inside `manual_dir`, with a clear error if absent."""
  for candidate in _LAYOUT_CANDIDATES:
    root = manual_dir / candidate
    if (root / "images").is_dir() and (root / "groundTruth").is_dir():
      return root
  raise FileNotFoundError(
      f"{manual_dir}: no BSDS500 release found; expected "
      + " or ".join(f"{manual_dir / c}/{{images,groundTruth}}/{{train,val,test}}" for c in _LAYOUT_CANDIDATES)
      + " (unpack BSR_bsds500.tgz there)")


def split_files(root: pathlib.Path, split: str) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """(id, image, groundTruth) of a split, sorted by id; the release's Thumbs.db etc. are ignored."""
  images_dir = root / "images" / split
  gt_dir = root / "groundTruth" / split
  for folder in (images_dir, gt_dir):
    if not folder.is_dir():
      raise FileNotFoundError(f"{folder}: missing split folder of the BSDS500 release")
  out = []
  for image in sorted(images_dir.glob("*.jpg")):
    gt = gt_dir / f"{image.stem}.mat"
    if not gt.is_file():
      raise FileNotFoundError(f"{gt}: missing ground truth for image {image}")
    out.append((image.stem, image, gt))
  if not out:
    raise FileNotFoundError(f"{images_dir}: no .jpg images")
  return out


def read_example(image_id: str, image: pathlib.Path, gt_file: pathlib.Path) -> dict:
  """One example; BadFileError naming the file if the JPEG or the groundTruth is bad."""
  shape = bad_files.decode_image(image)
  gt = bad_files.read(gt_file, bsds_io.load_ground_truth)
  if gt.shape != shape:
    raise bad_files.BadFileError(f"{gt_file}: groundTruth is {gt.shape[0]}x{gt.shape[1]}, but "
                                 f"image {image} is {shape[0]}x{shape[1]}")
  for k, segmentation in enumerate(gt.segmentations):
    if segmentation.min() < 1:
      raise bad_files.BadFileError(f"{gt_file}: groundTruth{{{k + 1}}}.Segmentation has label "
                                   f"{segmentation.min()}; the release's labels start at 1")
  return {
      "image": image,  # a path: TFDS stores the JPEG bytes without re-encoding
      "image/id": image_id,
      "segmentations": np.stack(gt.segmentations).astype(np.int32),
      "boundaries": np.stack(gt.boundaries),
  }


class Builder(builder_base.JhsegBuilder):
  """BSDS500 images with all human segmentations and boundaries."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Unpack the official BSR_bsds500.tgz into manual_dir, keeping its layout:
    BSR/BSDS500/data/images/{train,val,test}/*.jpg
    BSR/BSDS500/data/groundTruth/{train,val,test}/*.mat
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "segmentations": builder_base.zlib_array(
                3, dtype=np.int32,
                doc="(K, H, W) human segmentations, labels from 1, release order"),
            "boundaries": builder_base.zlib_array(
                3, dtype=np.bool_,
                doc="(K, H, W) the release's thinned human boundaries, same order"),
        }),
        supervised_keys=None,
        homepage="https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/resources.html",
        citation="""\
@article{arbelaez2011contour,
  title={Contour Detection and Hierarchical Image Segmentation},
  author={Arbelaez, Pablo and Maire, Michael and Fowlkes, Charless and Malik, Jitendra},
  journal={IEEE TPAMI}, volume={33}, number={5}, pages={898--916}, year={2011}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = find_data_root(pathlib.Path(dl_manager.manual_dir))
    return {split: self._generate_examples(split, split_files(root, split)) for split in SPLITS}

  def _generate_examples(self, split: str, files):
    paths = {image_id: (image, gt_file) for image_id, image, gt_file in files}
    yield from self.checked_examples(split, list(paths),
                                     lambda image_id: read_example(image_id, *paths[image_id]))
