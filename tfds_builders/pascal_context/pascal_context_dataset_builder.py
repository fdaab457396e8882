"""TFDS builder `pascal_context`: PASCAL-Context (Mottaghi et al., CVPR 2014) full labels
on the VOC2010 images, with region ground truths for segmentation benchmarks (DEL).

Reads the official releases from `manual_dir` (layout in `release_files` and README.md).

Splits: `train` (4998) and `val` (5105), VOC2010's ImageSets/Main lists, the 10103
images PASCAL-Context annotates. DEL (Liu et al., IJCAI 2018, Sec. 2.5 / 3.3) uses a
7605 / 2498 trainval / test division of the same images whose list is not published
with the paper or the authors' code (github.com/yun-liu/del); the `pascal_context` DEL
config trains on `train` and tests on `val` instead (a listed deviation).

Features:

- `image`: the VOC2010 JPEG bytes, unchanged.
- `image/id`: e.g. "2008_000002".
- `semantic`: int32 (H, W) class ids of LabelMap, 1-459 as in labels.txt, 0 unlabelled.
- `segmentations`: int32 (1, H, W) the regions: 4-connected components of equal class
  ids, numbered from 1 in raster order, 0 (no region) on unlabelled pixels -- the
  region ground truth DEL derives "by connectivity labeling" (Sec. 3.3), in the (K, H, W)
  layout of `bsds500`'s human segmentations (K = 1).
Label maps are zlib-encoded Tensor(int32) as in the other builders of this repository.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base
from tfds_builders import manual_dir as manual_dir_lib
from tfds_builders.pascal_context import release_files

SPLITS = ("train", "val")


def read_example(releases: release_files.Releases, image_id: str, max_class: int) -> dict:
  """One example; BadFileError naming the file if the JPEG or the .mat is bad."""
  image = releases.voc / "JPEGImages" / f"{image_id}.jpg"
  if not image.is_file():
    raise FileNotFoundError(f"{image}: missing VOC2010 image of a PASCAL-Context annotation")
  label_file = releases.context / "trainval" / f"{image_id}.mat"
  semantic = bad_files.read(
      label_file, lambda p: release_files.read_label_map(p, max_class=max_class))
  height, width = bad_files.decode_image(image)
  if semantic.shape != (height, width):
    raise bad_files.BadFileError(f"{label_file}: LabelMap is {semantic.shape}, but image "
                                 f"{image} is {(height, width)}")
  return {"image": image, "image/id": image_id, "semantic": semantic,
          "segmentations": release_files.connected_regions(semantic)[None]}


class Builder(builder_base.JhsegBuilder):
  """PASCAL-Context (459 classes) on VOC2010 train / val, with connected-region truths."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Unpack into manual_dir, keeping their layouts:
    trainval.tar.gz (PASCAL-Context)  -> trainval/<id>.mat, labels.txt
    VOCtrainval_03-May-2010.tar       -> VOCdevkit/VOC2010/{JPEGImages,ImageSets/Main}
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "semantic": builder_base.zlib_array(
                2, dtype=np.int32,
                doc="(H, W) PASCAL-Context class ids (labels.txt), 0 unlabelled"),
            "segmentations": builder_base.zlib_array(
                3, dtype=np.int32,
                doc="(1, H, W) 4-connected regions of equal class, from 1; 0 unlabelled"),
        }),
        supervised_keys=None,
        homepage="https://cs.stanford.edu/~roozbeh/pascal-context/",
        citation="""\
@inproceedings{mottaghi2014role,
  title={The Role of Context for Object Detection and Semantic Segmentation in the Wild},
  author={Mottaghi, Roozbeh and Chen, Xianjie and Liu, Xiaobai and Cho, Nam-Gyu and
          Lee, Seong-Whan and Fidler, Sanja and Urtasun, Raquel and Yuille, Alan},
  booktitle={CVPR}, year={2014}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    releases = release_files.find_releases(pathlib.Path(dl_manager.manual_dir))
    names = release_files.read_class_names(releases.context / "labels.txt")
    lists = releases.voc / "ImageSets" / "Main"
    return {split: self._generate_examples(
        releases, split, manual_dir_lib.read_ids(lists / f"{split}.txt"), max(names))
            for split in SPLITS}

  def _generate_examples(self, releases, split: str, ids, max_class: int):
    yield from self.checked_examples(
        split, sorted(ids), lambda image_id: read_example(releases, image_id, max_class))
