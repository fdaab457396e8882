"""TFDS builder `imagenet100`: the 100-class ImageNet subset of Tian et al. (CMC, 2020).

CAST (Ke, Mo, Yu, ICLR 2024; appendix E.2) trains its ablations (Tables 1, 4, 6) on this
"IN-100": the 100 ImageNet-1K synsets of `classes.txt` (the list the CMC authors published
in HobbitLong/CMC issue 21, kept sorted), all their training images (~127k) and their
validation images (5 000).

Reads the same manual files as TFDS's `imagenet2012`: `ILSVRC2012_img_train.tar` (one
`<synset>.tar` per class inside) and `ILSVRC2012_img_val.tar` (`ILSVRC2012_val_<n>.JPEG`).
Training archives of other classes are skipped unread; a validation image's synset is line
n of TFDS's `validation_labels.txt` (the labels of the 50 000 images in name order).

Features:
  image      the release's JPEG (the 22 CMYK and 1 PNG files of the release converted to
             RGB JPEG, as TFDS's imagenet2012 3.0.0+)
  label      index of the synset in the sorted `classes.txt` (as an ImageFolder of the 100
             class folders, the CMC authors' loader)
  file_name  e.g. "n01558993_10010.JPEG" / "ILSVRC2012_val_00000006.JPEG"
Files: array_record by default.
"""
from __future__ import annotations

import io
import os
import pathlib
import re

import tensorflow_datasets as tfds
from tensorflow_datasets.datasets.imagenet2012 import (
    imagenet2012_dataset_builder as tfds_imagenet)

from tfds_builders import builder_base

CLASSES_FILE = pathlib.Path(__file__).with_name("classes.txt")
VALIDATION_LABELS = "datasets/imagenet2012/validation_labels.txt"  # in tensorflow_datasets
TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VAL_ARCHIVE = "ILSVRC2012_img_val.tar"
_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")

# The release's files that are not RGB JPEG: TFDS's imagenet2012 builder's own lists (from
# github.com/cytsai/ilsvrc-cmyk-image-list); in IN-100, two CMYK images.
CMYK_IMAGES = frozenset(tfds_imagenet.CMYK_IMAGES)
PNG_IMAGES = frozenset(tfds_imagenet.PNG_IMAGES)


def imagenet100_classes() -> tuple[str, ...]:
  classes = tuple(CLASSES_FILE.read_text().split())
  if len(classes) != 100 or list(classes) != sorted(set(classes)):
    raise ValueError(f"{CLASSES_FILE}: expected 100 distinct sorted synsets, got {len(classes)}")
  return classes


def validation_synsets() -> list[str]:
  """Synset of ILSVRC2012_val_<n>.JPEG at index n - 1."""
  return tfds.core.tfds_path(VALIDATION_LABELS).read_text().split()


def validation_synset(file_name: str, synsets: list[str]) -> str:
  match = _VAL_NAME.search(file_name)
  if not match or not 1 <= int(match.group(1)) <= len(synsets):
    raise ValueError(f"{VAL_ARCHIVE}: member {file_name!r} is not ILSVRC2012_val_<n>.JPEG "
                     f"with 1 <= n <= {len(synsets)}")
  return synsets[int(match.group(1)) - 1]


def rgb_jpeg(file_name: str, image) -> io.BytesIO | object:
  """The release's bytes, or an RGB JPEG for its CMYK / PNG files."""
  if file_name in CMYK_IMAGES:
    return io.BytesIO(tfds.core.utils.jpeg_cmyk_to_rgb(image.read()))
  if file_name in PNG_IMAGES:
    return io.BytesIO(tfds.core.utils.png_to_jpeg(image.read()))
  return image


class Builder(builder_base.JhsegBuilder):
  """ImageNet-100 (CMC's 100 classes) from the ImageNet-1K archives."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  manual_dir holds {TRAIN_ARCHIVE} and {VAL_ARCHIVE}, the ImageNet-1K (ILSVRC 2012)
  archives from https://image-net.org/download-images (registration needed), as for
  TFDS's imagenet2012.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(encoding_format="jpeg"),
            "label": tfds.features.ClassLabel(names=imagenet100_classes()),
            "file_name": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/HobbitLong/CMC",
    )

  def _split_generators(self, dl_manager):
    manual = pathlib.Path(dl_manager.manual_dir)
    missing = [name for name in (TRAIN_ARCHIVE, VAL_ARCHIVE) if not (manual / name).exists()]
    if missing:
      raise FileNotFoundError(f"imagenet100: {', '.join(missing)} not found in manual_dir "
                              f"{manual}; expected the ImageNet-1K archives {TRAIN_ARCHIVE} "
                              f"and {VAL_ARCHIVE}")
    return {split: self._generate_examples(split, dl_manager.iter_archive(manual / archive))
            for split, archive in (("train", TRAIN_ARCHIVE), ("validation", VAL_ARCHIVE))}

  def _generate_examples(self, split: str, archive):
    if split == "train":
      yield from self._generate_train(archive)
    else:
      yield from self._generate_validation(archive)

  def _generate_train(self, archive):
    classes = set(imagenet100_classes())
    for name, class_tar in archive:
      if not name.endswith(".tar"):
        raise ValueError(f"{TRAIN_ARCHIVE}: member {name!r} is not a <synset>.tar archive")
      synset = os.path.basename(name)[:-len(".tar")]
      if synset not in classes:
        continue
      # The inner archive is read into memory (tarfile needs to seek; ~150 MB at most).
      inner = io.BytesIO(class_tar.read())
      for file_name, image in tfds.download.iter_archive(
          inner, tfds.download.ExtractMethod.TAR_STREAM):
        file_name = os.path.basename(file_name)
        yield file_name, {"image": rgb_jpeg(file_name, image), "label": synset,
                          "file_name": file_name}

  def _generate_validation(self, archive):
    classes, synsets = set(imagenet100_classes()), validation_synsets()
    for name, image in archive:
      file_name = os.path.basename(name)
      synset = validation_synset(file_name, synsets)
      if synset in classes:
        yield file_name, {"image": image, "label": synset, "file_name": file_name}
