"""TFDS builder `pascal_part_108`: PASCAL-Part-108 semantic part segmentation.

PASCAL VOC 2010 images with two label maps built from the official Pascal-Part annotations
(`Annotations_Part/*.mat`, Chen et al., CVPR 2014), read from `manual_dir` (README.md):

  image          the VOC 2010 JPEG
  image/id       e.g. "2008_000652"
  object_class   HxW uint8, 0 background, 1..20 VOC classes (`classes.OBJECT_CLASSES`)
  part_class     HxW uint8, 0..107 (`classes.PART_CLASSES`), 255 = ignore (object pixels
                 without a part annotation, and the table's ignored parts)

`part_class != 255` implies `object_class == PART_TO_OBJECT[part_class]` (see labels.py);
the tree is also in `info.metadata` (`jhseg.label_tree.LabelTree.from_metadata`).

Splits (HiPoSeg section 4.1, after GMNet / BSANet: 4,998 train / 5,105 test): `train` =
VOC2010 `ImageSets/Main/train.txt`, `test` = `val.txt`, restricted to the images that have
an annotation. Without the lists (e.g. the 18-image sample) a documented fallback that is
not the benchmark split: sorted ids, even positions train, odd positions test.

Files: array_record by default (the library reads through `tfds.data_source`). Every JPEG is
decoded and every annotation read while building; a bad file fails naming it, or is skipped
with `JHSEG_BAD_FILES=skip` (tfds_builders/bad_files.py).
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base
from tfds_builders import manual_dir as manual_dir_lib
from tfds_builders.pascal_part_108 import classes
from tfds_builders.pascal_part_108 import labels
from tfds_builders.ultrametric_pascal_part import layout
from tfds_builders.ultrametric_pascal_part import pascal_part_mat

# Where VOC2010's train.txt / val.txt may be, relative to manual_dir, in lookup order.
SPLIT_LIST_DIRS = (".", "ImageSets/Main", "VOCdevkit/VOC2010/ImageSets/Main")
FALLBACK_RULE = ("fallback (no train.txt/val.txt found): sorted ids, even positions -> train, "
                 "odd -> test; NOT the benchmark split")


def split_ids(manual_dir: pathlib.Path, available: list[str]
              ) -> tuple[dict[str, tuple[str, ...]], str]:
  """({"train": ids, "test": ids}, rule) restricted to `available` ids."""
  for relative in SPLIT_LIST_DIRS:
    directory = manual_dir / relative
    train_list, val_list = directory / "train.txt", directory / "val.txt"
    if train_list.is_file() and val_list.is_file():
      train, test = set(manual_dir_lib.read_ids(train_list)), set(manual_dir_lib.read_ids(val_list))
      if train & test:
        raise ValueError(f"{train_list} and {val_list} share ids, e.g. "
                         f"{sorted(train & test)[:5]}; expected disjoint lists")
      keep = lambda ids: tuple(sorted(i for i in available if i in ids))
      return ({"train": keep(train), "test": keep(test)},
              f"train = {train_list}, test = {val_list} (VOC2010 train / val)")
  ordered = sorted(available)
  return {"train": tuple(ordered[0::2]), "test": tuple(ordered[1::2])}, FALLBACK_RULE


def make_example(annotations_dir: pathlib.Path, images_dir: pathlib.Path,
                 image_id: str) -> dict:
  """One example; errors name the annotation or image file and the field."""
  annotation_path = annotations_dir / f"{image_id}.mat"
  image_path = images_dir / f"{image_id}.jpg"
  if not image_path.is_file():
    raise FileNotFoundError(f"{image_path}: missing VOC2010 image for annotation "
                            f"{annotation_path}")
  annotation = bad_files.read(annotation_path, pascal_part_mat.read_annotation)
  shape = bad_files.decode_image(image_path)  # fully decoded: a truncated JPEG fails here
  if annotation.objects and annotation.objects[0].mask.shape != shape:
    raise ValueError(f"{annotation_path}: field `anno.objects(1).mask`: expected the shape "
                     f"{shape} of {image_path}, got {annotation.objects[0].mask.shape}")
  object_class, part_class = labels.class_maps(annotation, shape, source=annotation_path)
  return {"image": str(image_path), "image/id": image_id,
          "object_class": object_class, "part_class": part_class}


class Builder(builder_base.JhsegBuilder):
  """PASCAL-Part-108: VOC2010 images, 21 object and 108 part classes per pixel."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put in manual_dir (see tfds_builders/pascal_part_108/README.md):
    Annotations_Part/*.mat   from Pascal-Part trainval.tar.gz
    JPEGImages/*.jpg         from VOC2010 VOCtrainval_03-May-2010.tar (VOCdevkit/VOC2010/ also OK)
    train.txt, val.txt       VOC2010 ImageSets/Main lists (train / test split; optional)
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "object_class": builder_base.zlib_array(
                2, dtype=np.uint8, doc="object class per pixel, 0 = background (21)"),
            "part_class": builder_base.zlib_array(
                2, dtype=np.uint8, doc="part class per pixel (108), 255 = ignore"),
        }),
        supervised_keys=("image", "part_class"),
        metadata=tfds.core.MetadataDict(classes.label_tree().to_metadata()),
        homepage="http://roozbehm.info/pascal-parts/pascal-parts.html",
        citation="""\
@inproceedings{chen2014detect,
  title={Detect What You Can: Detecting and Representing Objects using Holistic Models and Body Parts},
  author={Chen, Xianjie and Mottaghi, Roozbeh and Liu, Xiaobai and Fidler, Sanja and Urtasun, Raquel and Yuille, Alan},
  booktitle={CVPR}, year={2014}}
@inproceedings{michieli2020gmnet,
  title={GMNet: Graph Matching Network for Large Scale Part Semantic Segmentation in the Wild},
  author={Michieli, Umberto and Borsato, Edoardo and Rossi, Luca and Zanuttigh, Pietro},
  booktitle={ECCV}, year={2020}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    releases = layout.find_layout(manual_dir, require_context=False)
    # Every annotated image must have its JPEG: make_example fails naming a missing one.
    available = sorted(p.stem for p in releases.annotations_dir.glob("*.mat"))
    ids, rule = split_ids(manual_dir, available)
    self.info.metadata["split_rule"] = rule
    return {name: self._generate_examples(releases, name, split) for name, split in ids.items()
            if split}

  def _generate_examples(self, releases: layout.ReleaseLayout, split: str,
                         ids: tuple[str, ...]):
    yield from self.checked_examples(
        split, ids, lambda image_id: make_example(releases.annotations_dir,
                                                  releases.images_dir, image_id))
