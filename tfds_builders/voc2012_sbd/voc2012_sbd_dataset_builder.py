"""TFDS builder `voc2012_sbd`: PASCAL VOC 2012 segmentation with SBD's extra training set.

Reads the official releases from `manual_dir` (layout in `release_files` and README.md).

Splits:

- `train`: VOC2012 ImageSets/Segmentation/train.txt (1464 images), VOC labels.
- `val`: VOC2012 ImageSets/Segmentation/val.txt (1449), VOC labels -- the usual test set.
- `train_aug`: the "train_aug" / "trainaug" set of DeepLab and later work (10582 images
  with the full releases): (SBD train ∪ SBD val ∪ VOC train) minus VOC val. An image annotated in VOC's SegmentationClass keeps that annotation (the official
  one, with 255 void borders); the others take SBD's GTcls.Segmentation (no void).
  HSG (Ke et al., CVPR 2022) uses this set ("train+", 10582 images) as the labelled memory
  for segment retrieval on VOC.

Records are keyed by image id; TFDS stores them in its (deterministic) key-hash order.

Features:

- `image`: the release's JPEG bytes, unchanged (VOC2012 JPEGImages/, else SBD img/).
- `image/id`: e.g. "2007_000032".
- `segmentation`: int32 (H, W) class indices, 0 background, 1-20 VOC classes (alphabetical
  VOC order), 255 void. Stored as a zlib-encoded Tensor(int32) as the other builders of
  this repository (lossless, the repository's label-map dtype).
- `label_source`: "voc" or "sbd", which release the segmentation comes from.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base
from tfds_builders import manual_dir as manual_dir_lib
from tfds_builders.voc2012_sbd import release_files

SPLITS = ("train", "val", "train_aug")


def split_sources(releases: release_files.Releases) -> dict[str, list[tuple[str, str]]]:
  """split -> sorted [(image id, 'voc' | 'sbd')] (see the module docstring)."""
  voc_sets = releases.voc / "ImageSets" / "Segmentation"
  voc_train = manual_dir_lib.read_ids(voc_sets / "train.txt")
  voc_val = manual_dir_lib.read_ids(voc_sets / "val.txt")
  sbd_ids = (set(manual_dir_lib.read_ids(releases.sbd / "train.txt"))
             | set(manual_dir_lib.read_ids(releases.sbd / "val.txt")))
  voc_labelled = set(voc_train) | set(voc_val)
  aug = sorted((sbd_ids | set(voc_train)) - set(voc_val))
  return {
      "train": [(i, "voc") for i in sorted(voc_train)],
      "val": [(i, "voc") for i in sorted(voc_val)],
      "train_aug": [(i, "voc" if i in voc_labelled else "sbd") for i in aug],
  }


def read_example(releases: release_files.Releases, image_id: str, source: str) -> dict:
  """One example; BadFileError naming the file if the JPEG or the label map is bad.

  The JPEG is decoded completely; the label map must decode, hold valid class indices and
  have the image's size.
  """
  image = release_files.image_path(releases, image_id)
  if source == "voc":
    label_file = releases.voc / "SegmentationClass" / f"{image_id}.png"
    segmentation = bad_files.read(label_file, release_files.read_voc_label)
  else:
    label_file = releases.sbd / "cls" / f"{image_id}.mat"
    segmentation = bad_files.read(label_file, release_files.read_sbd_label)
  height, width = bad_files.decode_image(image)
  if segmentation.shape != (height, width):
    raise bad_files.BadFileError(f"{label_file}: label map is {segmentation.shape}, but image "
                                 f"{image} is {(height, width)}")
  return {"image": image, "image/id": image_id, "segmentation": segmentation,
          "label_source": source}


class Builder(builder_base.JhsegBuilder):
  """PASCAL VOC 2012 segmentation (train, val) and SBD-augmented train_aug."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Unpack into manual_dir, keeping their layouts:
    VOCtrainval_11-May-2012.tar -> VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets}
    benchmark.tgz (SBD)         -> benchmark_RELEASE/dataset/{img,cls,train.txt,val.txt}
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "segmentation": builder_base.zlib_array(
                2, dtype=np.int32,
                doc="(H, W) class indices: 0 background, 1-20 VOC classes, 255 void"),
            "label_source": tfds.features.Text(doc="'voc' (SegmentationClass) or 'sbd' (GTcls)"),
        }),
        supervised_keys=None,
        homepage="http://host.robots.ox.ac.uk/pascal/VOC/voc2012/",
        citation="""\
@misc{pascal-voc-2012,
  author={Everingham, M. and Van~Gool, L. and Williams, C. K. I. and Winn, J. and Zisserman, A.},
  title={The {PASCAL} {V}isual {O}bject {C}lasses {C}hallenge 2012 {(VOC2012)} {R}esults},
  howpublished={http://www.pascal-network.org/challenges/VOC/voc2012/workshop/index.html}}
@inproceedings{hariharan2011semantic,
  title={Semantic Contours from Inverse Detectors},
  author={Hariharan, Bharath and Arbel{\\'a}ez, Pablo and Bourdev, Lubomir and Maji, Subhransu
          and Malik, Jitendra},
  booktitle={ICCV}, year={2011}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    releases = release_files.find_releases(pathlib.Path(dl_manager.manual_dir))
    sources = split_sources(releases)
    return {split: self._generate_examples(releases, split, sources[split]) for split in SPLITS}

  def _generate_examples(self, releases, split: str, items):
    source_of = dict(items)
    yield from self.checked_examples(
        split, [image_id for image_id, _ in items],
        lambda image_id: read_example(releases, image_id, source_of[image_id]))
