"""TFDS builder `ade20k`: ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

Reads the extracted release `ADEChallengeData2016.zip` from `manual_dir` (either the
folder itself or its parent):

  images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
  annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png   (0 = other, 1..150)

and stores (tfds_builders/semantic_release.py) `image`, `image/id` and `label`: HxW uint8
class 0..149 (`classes.CLASSES`), 255 where the annotation is 0 ("other objects", not
evaluated). Splits: `train` (20,210) and `validation` (2,000).

`info.metadata` holds the class names; it has no label tree (`classes` explains why).
"""
from __future__ import annotations

import pathlib

import tensorflow_datasets as tfds

from tfds_builders import builder_base
from tfds_builders import semantic_release
from tfds_builders.ade20k import classes

RELEASE_FOLDER = "ADEChallengeData2016"
SPLITS = {"train": "training", "validation": "validation"}  # TFDS split -> release folder


def release_root(manual_dir: pathlib.Path) -> pathlib.Path:
  for root in (manual_dir / RELEASE_FOLDER, manual_dir):
    if (root / "images").is_dir() and (root / "annotations").is_dir():
      return root
  raise FileNotFoundError(f"{manual_dir}: expected the extracted {RELEASE_FOLDER}.zip "
                          f"({RELEASE_FOLDER}/images/<split>/*.jpg and "
                          f"{RELEASE_FOLDER}/annotations/<split>/*.png), here or in it")


def split_pairs(root: pathlib.Path, folder: str
                ) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """[(image id, image path, annotation path)] of one split, sorted by id."""
  images = sorted((root / "images" / folder).glob("*.jpg"))
  if not images:
    raise FileNotFoundError(f"{root / 'images' / folder}: no *.jpg images")
  return [(p.stem, p, root / "annotations" / folder / f"{p.stem}.png") for p in images]


class Builder(builder_base.JhsegBuilder):
  """ADE20K SceneParsing: class 0..149 per pixel, 255 = other."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Extract http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip into
  manual_dir (-> manual_dir/ADEChallengeData2016/{images,annotations}/{training,validation}).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=semantic_release.features(
            image_format="jpeg", label_doc="ADE20K class 0..149, 255 = other / ignore"),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict({"class_names": list(classes.CLASSES),
                                         "ignore_label": classes.IGNORE_LABEL}),
        homepage="http://sceneparsing.csail.mit.edu/",
        citation="""\
@inproceedings{zhou2017scene,
  title={Scene Parsing through ADE20K Dataset},
  author={Zhou, Bolei and Zhao, Hang and Puig, Xavier and Fidler, Sanja and Barriuso, Adela and Torralba, Antonio},
  booktitle={CVPR}, year={2017}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    root = release_root(pathlib.Path(dl_manager.manual_dir))
    return {split: self._generate_examples(split, split_pairs(root, folder))
            for split, folder in SPLITS.items()}

  def _generate_examples(self, split: str, pairs):
    yield from semantic_release.generate_examples(self, split, pairs, classes.ANNOTATION_TO_CLASS,
                                                  image_format="JPEG")
