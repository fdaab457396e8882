"""TFDS builder `mapillary_vistas`: Mapillary Vistas v2.0 semantic segmentation, 124
classes under LogicSeg's hierarchy (HiPoSeg section 4.1).

Reads the extracted release from `manual_dir`:

  config_v2.0.json                              the label list ({"labels": [...]}, 124)
  {training,validation}/images/<key>.jpg
  {training,validation}/v2.0/labels/<key>.png   palette PNG, index = label 0..123

and stores (tfds_builders/semantic_release.py) `image`, `image/id` and `label`: HxW uint8
class 0..123 (`classes.CLASSES`; 123 'Unlabeled' is a class, as in LogicSeg). Splits:
`train` (18,000) and `validation` (2,000); the test labels are not released.

The builder checks that config_v2.0.json has the 124 labels of the shipped table (by
count: the readable names of two classes differ between sources, see the table's
`sources`) and records its readable names in `info.metadata["release_names"]`.
"""
from __future__ import annotations

import json
import pathlib

import tensorflow_datasets as tfds

from tfds_builders import builder_base
from tfds_builders import semantic_release
from tfds_builders.mapillary_vistas import classes

CONFIG_FILE = "config_v2.0.json"
SPLITS = {"train": "training", "validation": "validation"}  # TFDS split -> release folder
TABLE = semantic_release.lookup_table(classes.LABEL_INDICES)


def read_release_names(path: pathlib.Path) -> list[str]:
  """The readable names of config_v2.0.json; errors name the file and the field."""
  if not path.is_file():
    raise FileNotFoundError(f"{path}: missing; manual_dir should hold the release's "
                            f"{CONFIG_FILE}")
  config = json.loads(path.read_text())
  labels = config.get("labels") if isinstance(config, dict) else None
  if not isinstance(labels, list):
    raise ValueError(f"{path}: expected a JSON object with a `labels` list")
  if len(labels) != classes.NUM_CLASSES:
    raise ValueError(f"{path}: field `labels` has {len(labels)} entries; the v2.0 label "
                     f"table has {classes.NUM_CLASSES} (is this the v1.2 config?)")
  names = []
  for index, label in enumerate(labels):
    if not isinstance(label, dict) or "readable" not in label:
      raise ValueError(f"{path}: field `labels[{index}]` lacks `readable`")
    names.append(str(label["readable"]))
  return names


def split_pairs(manual_dir: pathlib.Path, folder: str
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """[(key, image path, label path)] of one split, sorted by key."""
  images = sorted((manual_dir / folder / "images").glob("*.jpg"))
  if not images:
    raise FileNotFoundError(f"{manual_dir / folder / 'images'}: no *.jpg images (expected "
                            f"the extracted Mapillary Vistas release)")
  labels_dir = manual_dir / folder / "v2.0" / "labels"
  return [(p.stem, p, labels_dir / f"{p.stem}.png") for p in images]


class Builder(builder_base.JhsegBuilder):
  """Mapillary Vistas v2.0: class 0..123 per pixel, mid/top groups by the tree."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  From https://www.mapillary.com/dataset/vistas (registration), extract the v2.0 release into
  manual_dir: config_v2.0.json, {training,validation}/images/*.jpg,
  {training,validation}/v2.0/labels/*.png.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=semantic_release.features(
            image_format="jpeg", label_doc="Mapillary Vistas v2.0 class 0..123"),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(classes.label_tree().to_metadata()),
        homepage="https://www.mapillary.com/dataset/vistas",
        citation="""\
@inproceedings{neuhold2017mapillary,
  title={The Mapillary Vistas Dataset for Semantic Understanding of Street Scenes},
  author={Neuhold, Gerhard and Ollmann, Tobias and Rota Bul{\\`o}, Samuel and Kontschieder, Peter},
  booktitle={ICCV}, year={2017}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    self.info.metadata["release_names"] = read_release_names(manual_dir / CONFIG_FILE)
    return {split: self._generate_examples(split, split_pairs(manual_dir, folder))
            for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, pairs):
    yield from semantic_release.generate_examples(self, split, pairs, TABLE,
                                                  image_format="JPEG")
