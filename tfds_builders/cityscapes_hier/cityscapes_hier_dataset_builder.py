"""TFDS builder `cityscapes_hier`: Cityscapes fine annotations as 19 classes under 7
categories (HiPoSeg section 4.1, hierarchy of HSSN / LogicSeg).

Reads the extracted release (`leftImg8bit_trainvaltest.zip`, `gtFine_trainvaltest.zip`)
from `manual_dir`:

  leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

and stores (tfds_builders/semantic_release.py):

  image      the 8-bit left PNG
  image/id   e.g. "aachen_000000_000019"
  label      HxW uint8 train id 0..18 (`classes.CLASSES`), 255 = ignore: the label ids
             of `*_gtFine_labelIds.png` mapped through the official table
             (`classes.LABEL_ID_TO_TRAIN_ID`); the category is `classes.TRAIN_ID_TO_CATEGORY`
             of it (also the tree in `info.metadata`).

Splits: `train` (2,975 images) and `validation` (the release's `val`, 500). The test split
is left out: its released annotations are empty.

Why not TFDS `cityscapes`: it stores the label ids (not train ids) as (H, W, 1) PNG images,
extracts the zips itself and writes tfrecord by default; this builder writes array_record
and the train ids, so the data pipeline needs no mapping. `classes.train_ids` maps TFDS'
`segmentation_label` the same way when that builder is used instead.
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from tfds_builders import builder_base
from tfds_builders import semantic_release
from tfds_builders.cityscapes_hier import classes

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
SPLITS = {"train": "train", "validation": "val"}  # TFDS split -> release folder


def split_pairs(manual_dir: pathlib.Path, folder: str
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """[(image id, image path, label path)] of one release split, sorted by id."""
  images_dir = manual_dir / "leftImg8bit" / folder
  labels_dir = manual_dir / "gtFine" / folder
  for directory in (images_dir, labels_dir):
    if not directory.is_dir():
      raise FileNotFoundError(
          f"{directory}: missing; manual_dir should hold the extracted leftImg8bit_trainvaltest"
          f".zip and gtFine_trainvaltest.zip (leftImg8bit/{folder}/<city>/*{IMAGE_SUFFIX}, "
          f"gtFine/{folder}/<city>/*{LABEL_SUFFIX})")
  pairs = []
  for image_path in sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}")):
    image_id = image_path.name[:-len(IMAGE_SUFFIX)]
    label_path = labels_dir / image_path.parent.name / f"{image_id}{LABEL_SUFFIX}"
    pairs.append((image_id, image_path, label_path))
  if not pairs:
    raise FileNotFoundError(f"{images_dir}: no <city>/*{IMAGE_SUFFIX} images")
  return pairs


class Builder(builder_base.JhsegBuilder):
  """Cityscapes (fine): train ids 0..18 per pixel, categories by the tree."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From https://www.cityscapes-dataset.com/downloads/ (registration), extract into manual_dir:
    leftImg8bit_trainvaltest.zip  -> leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png
    gtFine_trainvaltest.zip       -> gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=semantic_release.features(
            image_format="png", label_doc="Cityscapes train id 0..18, 255 = ignore"),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(classes.label_tree().to_metadata()),
        homepage="https://www.cityscapes-dataset.com",
        citation="""\
@inproceedings{cordts2016cityscapes,
  title={The Cityscapes Dataset for Semantic Urban Scene Understanding},
  author={Cordts, Marius and Omran, Mohamed and Ramos, Sebastian and Rehfeld, Timo and Enzweiler, Markus and Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and Schiele, Bernt},
  booktitle={CVPR}, year={2016}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    return {split: self._generate_examples(split, split_pairs(manual_dir, folder))
            for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, pairs):
    yield from semantic_release.generate_examples(self, split, pairs, classes.LABEL_ID_TO_TRAIN_ID,
                                                  image_format="PNG")
