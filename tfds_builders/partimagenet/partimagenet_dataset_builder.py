"""TFDS builder `partimagenet`: PartImageNet part segmentation (He et al., ECCV 2022).

Reads the official release from `manual_dir` (its format and the accepted layouts are in
`release_files`; README.md says where to get it). CAST (Ke, Mo, Yu, ICLR 2024, section
4.1, Table 1, appendix B) evaluates part-to-whole segmentation and test-time adaptation on
it: 2 categories (animals / things), 11 objects, 40 parts.

Features:
  image           the release's JPEG
  image/id        the file name without extension, e.g. "n01440764_10029"
  synset          the ImageNet synset of the image, e.g. "n01440764"
  label           ImageNet-1K class index of the synset (TFDS imagenet2012 label order)
  part_class      uint8 (H, W), 0 background, 1..40 parts (`info.metadata["part_classes"]`)
  object_class    uint8 (H, W), 0 background, 1..11 objects (`metadata["object_classes"]`)
  part_instances  int32 (H, W), 0 background, 1..n the image's part annotations
`object_class == part_to_object[part_class]` everywhere (`metadata["part_to_object"]`).

Splits: those of the release found in manual_dir (train / val / test). Every JPEG is
decoded while building and must have the size its annotation file states; a bad file
fails naming it, or is skipped with JHSEG_BAD_FILES=skip (tfds_builders/bad_files.py).
Files: array_record by default.
"""
from __future__ import annotations

import pathlib

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import bad_files
from tfds_builders import builder_base
from tfds_builders.partimagenet import release_files

IMAGENET_LABELS = "datasets/imagenet2012/labels.txt"  # inside the tensorflow_datasets package


def imagenet_synsets() -> tuple[str, ...]:
  return tuple(tfds.core.tfds_path(IMAGENET_LABELS).read_text().split())


def make_example(release: release_files.Release, images_dir: pathlib.Path,
                 image: release_files.ImageRecord, synsets: dict[str, int]) -> dict:
  """One example; errors name the annotation file or the image."""
  path = release_files.image_path(images_dir, image.file_name)
  shape = bad_files.decode_image(path)
  if shape != (image.height, image.width):
    raise bad_files.BadFileError(f"{path}: decoded size {shape}, but {release.path} states "
                                 f"height {image.height}, width {image.width}")
  if image.synset not in synsets:
    raise ValueError(f"{release.path}: image {image.file_name!r}: synset {image.synset!r} "
                     f"is not an ImageNet-1K class")
  return {"image": str(path), "image/id": pathlib.PurePath(image.file_name).stem,
          "synset": image.synset, "label": synsets[image.synset],
          **release_files.label_maps(release, image)}


class Builder(builder_base.JhsegBuilder):
  """PartImageNet: ImageNet images with 40 part and 11 object classes per pixel."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download PartImageNet_OOD.zip (or PartImageNet_Seg.zip) from
  https://huggingface.co/datasets/turkeyju/PartImageNet, unzip it into manual_dir and
  unzip the split zips inside it in place, giving
    train.json val.json test.json  train/<synset>/*.JPEG  val/...  test/...
  (see tfds_builders/partimagenet/README.md).
  """

  def _info(self) -> tfds.core.DatasetInfo:
    label_map = lambda dtype, doc: builder_base.zlib_array(2, dtype=dtype, doc=doc)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            **builder_base.image_features(),
            "synset": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=imagenet_synsets()),
            "part_class": label_map(np.uint8, "part class per pixel, 0 = background"),
            "object_class": label_map(np.uint8, "object class per pixel, 0 = background"),
            "part_instances": label_map(np.int32, "part annotation per pixel, 0 = none"),
        }),
        supervised_keys=("image", "part_class"),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/TACJu/PartImageNet",
        citation="""\
@inproceedings{he2022partimagenet,
  title={PartImageNet: A Large, High-Quality Dataset of Parts},
  author={He, Ju and Yang, Shuo and Yang, Shaokang and Kortylewski, Adam and Yuan, Xiaoding
    and Chen, Jie-Neng and Liu, Shuai and Yang, Cheng and Yu, Qihang and Yuille, Alan},
  booktitle={ECCV}, year={2022}}""",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    splits = release_files.find_splits(pathlib.Path(dl_manager.manual_dir))
    releases = {name: release_files.read_release(files.annotations)
                for name, files in splits.items()}
    first = next(iter(releases.values()))
    for release in releases.values():
      if release.categories != first.categories:
        raise ValueError(f"{release.path} and {first.path} list different categories; the "
                         f"splits of one release share them")
    self.info.metadata.update({
        "part_classes": ["background", *first.part_names],
        "object_classes": ["background", *first.object_names],
        "part_to_object": list(first.part_to_object())})
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    return {name: self._generate_examples(name, releases[name], splits[name].images_dir,
                                          synsets) for name in splits}

  def _generate_examples(self, split: str, release: release_files.Release,
                         images_dir: pathlib.Path, synsets: dict[str, int]):
    by_key = {str(image.id): image for image in release.images}
    yield from self.checked_examples(
        split, sorted(by_key), lambda key: make_example(release, images_dir, by_key[key],
                                                       synsets))
