"""TFDS builder `ultrametric_pascal_part` (Lapertot, Chierchia, Perret: supervised hierarchical
segmentation with ultrametric targets on Pascal-Part).

Reads the official releases from `manual_dir` (see README.md): Pascal-Part
`Annotations_Part/*.mat`, PASCAL VOC 2010 `JPEGImages/*.jpg`, optionally the VOC2010 split lists
and the PASCAL-Context `trainval/*.mat` label maps.

Configs (the paper's three targets):
  hierarchical    (default, HGM) ucm in {0, 0.5, 1}: instance boundaries 1, part boundaries 0.5;
  binary_parts    (BGM_UPP) ucm in {0, 1}: 1 on every part or instance boundary;
  binary_context  (BGM_PC) ucm in {0, 1}: boundaries of the PASCAL-Context label map.
All three store the same features; only `ucm` differs. Regions under 30 px are removed from
every target (see targets.py). Splits: see splits.py.

Feature encodings: `image` is the original VOC JPEG (tfds Image). `ucm`, `instances` and `parts`
are tfds Tensors (float32 / int32) with zlib encoding: they hold few distinct values, so zlib
shrinks a 749x999 float32 map from 3 MB to a few kB while decoding to exact arrays, with no
uint16 cap on ids (an Image(uint16) encoding was the alternative).
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base
from tfds_builders.ultrametric_pascal_part import context_mat
from tfds_builders.ultrametric_pascal_part import layout
from tfds_builders.ultrametric_pascal_part import pascal_part_mat
from tfds_builders.ultrametric_pascal_part import splits
from tfds_builders.ultrametric_pascal_part import stacking
from tfds_builders.ultrametric_pascal_part import targets


@dataclasses.dataclass
class UltrametricPascalPartConfig(tfds.core.BuilderConfig):
  """`target`: which ucm is stored, one of TARGETS."""
  target: str = "hierarchical"


# Config name -> (paper name, description of the stored `ucm`).
TARGETS = {
    "hierarchical": ("HGM", "3 levels: 1 on instance boundaries (incl. background), 0.5 on part "
                            "boundaries inside an object, 0 elsewhere"),
    "binary_parts": ("BGM_UPP", "binary: 1 on every part or instance boundary, 0 elsewhere"),
    "binary_context": ("BGM_PC", "binary: 1 on the boundaries of the PASCAL-Context label map "
                                 "(trainval/*.mat, LabelMap), 0 elsewhere"),
}


def _target_name(target: str) -> str:
  if target not in TARGETS:
    raise ValueError(f"unknown target {target!r}; valid: {sorted(TARGETS)}")
  return target


class Builder(builder_base.JhsegBuilder):
  """Ultrametric Pascal-Part: images with 2-level ultrametric part/instance targets.

  Writes array_record by default; every JPEG is decoded and every annotation validated
  (`bad_files="fail"|"skip"`, see tfds_builders/bad_files.py).
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      UltrametricPascalPartConfig(name=name, target=_target_name(name),
                                  description=f"{paper} target: {text}")
      for name, (paper, text) in TARGETS.items()
  ]
  DEFAULT_CONFIG_NAME = "hierarchical"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Put in manual_dir (see tfds_builders/ultrametric_pascal_part/README.md):
    Annotations_Part/*.mat   from Pascal-Part trainval.tar.gz
    JPEGImages/*.jpg         from VOC2010 VOCtrainval_03-May-2010.tar (VOCdevkit/VOC2010/ also OK)
    train.txt, val.txt       VOC2010 ImageSets/Main lists = PASCAL-Context train/val (optional)
    trainval/*.mat           PASCAL-Context trainval.tar.gz (needed by binary_context only)
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "ucm": builder_base.zlib_array(2, dtype=np.float32,
                                           doc="interpixel (2H-1, 2W-1) ultrametric target"),
            "instances": builder_base.zlib_array(2, dtype=np.int32,
                                                 doc="HxW instance ids, 0 = background"),
            "parts": builder_base.zlib_array(2, dtype=np.int32,
                                             doc="HxW part ids, 0 = background"),
            "instance_classes": tfds.features.Tensor(
                shape=(None,), dtype=np.int32,
                doc="VOC class index (1-20) of instance k at [k]; [0] = 0 (background)"),
        }),
        supervised_keys=("image", "ucm"),
        metadata=tfds.core.MetadataDict(),
        homepage="http://roozbehm.info/pascal-parts/pascal-parts.html",
        citation="""\
@inproceedings{chen2014detect,
  title={Detect What You Can: Detecting and Representing Objects using Holistic Models and Body Parts},
  author={Chen, Xianjie and Mottaghi, Roozbeh and Liu, Xiaobai and Fidler, Sanja and Urtasun, Raquel and Yuille, Alan},
  booktitle={CVPR}, year={2014}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    releases = layout.find_layout(manual_dir,
                                  require_context=self.builder_config.target == "binary_context")
    available = sorted(p.stem for p in releases.annotations_dir.glob("*.mat"))
    split_ids = splits.make_splits(manual_dir, available)
    self.info.metadata.update({"split_rule": split_ids.rule, "min_region_area":
                               targets.MIN_REGION_AREA, "target": self.builder_config.target})
    # TFDS cannot write an empty split; a tiny manual_dir may leave val or test empty.
    return {name: self._generate_examples(releases, name, ids)
            for name, ids in (("train", split_ids.train), ("val", split_ids.val),
                              ("test", split_ids.test)) if ids}

  def _generate_examples(self, releases: layout.ReleaseLayout, split: str,
                         ids: tuple[str, ...]):
    target = self.builder_config.target
    yield from self.checked_examples(split, ids,
                                     lambda image_id: make_example(releases, image_id, target))


def make_example(releases: layout.ReleaseLayout, image_id: str, target: str) -> dict:
  """One example: the stacked Pascal-Part maps and the `target` ucm, checked against the JPEG.

  The JPEG is decoded completely; a corrupt image or annotation raises BadFileError naming it.
  """
  annotation_path = releases.annotations_dir / f"{image_id}.mat"
  image_path = releases.images_dir / f"{image_id}.jpg"
  if not image_path.is_file():
    raise FileNotFoundError(f"{image_path}: missing VOC2010 image for annotation {annotation_path}")
  annotation = pascal_part_mat.read_annotation(annotation_path)
  shape = bad_files.decode_image(image_path)
  if annotation.objects and annotation.objects[0].mask.shape != shape:
    raise bad_files.BadFileError(
        f"{annotation_path}: field `anno.objects(1).mask`: expected the shape {shape} of "
        f"{image_path}, got {annotation.objects[0].mask.shape}")
  stacked = stacking.stack(annotation, shape)
  ucm, instances, parts = targets.hierarchical_target(stacked.instances, stacked.parts)
  if target == "binary_parts":
    ucm = targets.binary_parts_target(ucm)
  elif target == "binary_context":
    context_path = releases.context_dir / f"{image_id}.mat"
    if not context_path.is_file():
      raise FileNotFoundError(f"{context_path}: missing PASCAL-Context label map for {image_id}")
    label_map = context_mat.read_label_map(context_path)
    if label_map.shape != shape:
      raise bad_files.BadFileError(f"{context_path}: field `LabelMap`: expected the shape "
                                   f"{shape} of {image_path}, got {label_map.shape}")
    ucm = targets.binary_label_target(label_map)
  return {
      "image": str(image_path),
      "image/id": image_id,
      "ucm": ucm,
      "instances": instances,
      "parts": parts,
      "instance_classes": stacked.instance_classes,
  }
