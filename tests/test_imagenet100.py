"""imagenet100 builder on ImageNet-1K archives written in the release format (a train tar of
`<synset>.tar` archives, a val tar of `ILSVRC2012_val_<n>.JPEG`): only the 100 CMC classes
are kept, labels index the sorted class list, validation synsets come from TFDS's label file
by image number; a CMYK release file is converted; missing archives fail naming them."""
import io
import pathlib
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders.imagenet100 import imagenet100_dataset_builder as builder_module


def _jpeg(value: int, mode: str = "RGB") -> bytes:
  buffer = io.BytesIO()
  Image.new(mode, (6, 4), (value,) * len(mode)).save(buffer, format="JPEG")
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_archives(manual: pathlib.Path, train: dict[str, list[tuple[str, bytes]]],
                   val: dict[str, bytes]) -> None:
  manual.mkdir(parents=True)
  with tarfile.open(manual / builder_module.TRAIN_ARCHIVE, "w") as outer:
    for synset, images in train.items():
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for name, data in images:
          _add(tar, name, data)
      _add(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual / builder_module.VAL_ARCHIVE, "w") as tar:
    for name, data in val.items():
      _add(tar, name, data)


def test_class_list_is_cmcs_hundred_imagenet_synsets():
  classes = builder_module.imagenet100_classes()
  imagenet = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
  assert len(classes) == 100 and set(classes) <= set(imagenet)
  assert {"n02869837", "n01749939", "n02090622"} <= set(classes)  # first, second, last of CMC


def test_keeps_the_hundred_classes_with_sorted_labels(tmp_path):
  classes = builder_module.imagenet100_classes()
  synsets = builder_module.validation_synsets()
  # Validation images 1..60: which are IN-100 (first ones: 6, 9, 28, ... in 1-based names).
  kept_val = [n for n in range(1, 61) if synsets[n - 1] in classes]
  assert kept_val and len(kept_val) < 60
  write_archives(
      tmp_path / "manual",
      train={"n01440764": [("n01440764_1.JPEG", _jpeg(10))],          # tench: not IN-100
             "n13037406": [("n13037406_4650.JPEG", _jpeg(20, "CMYK")),  # a CMYK release file
                           ("n13037406_7.JPEG", _jpeg(30))],
             "n01558993": [("n01558993_2.JPEG", _jpeg(40))]},
      val={f"ILSVRC2012_val_{n:08d}.JPEG": _jpeg(n) for n in range(1, 61)})
  builder = builder_module.Builder(data_dir=str(tmp_path / "data"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / "manual")))
  assert builder.info.file_format.value == "array_record"
  assert builder.info.features["label"].names == list(classes)
  train = builder.as_data_source(split="train")
  got = sorted((r["file_name"].decode() if isinstance(r["file_name"], bytes) else r["file_name"],
                int(r["label"])) for r in train)
  assert got == [("n01558993_2.JPEG", classes.index("n01558993")),
                 ("n13037406_4650.JPEG", classes.index("n13037406")),
                 ("n13037406_7.JPEG", classes.index("n13037406"))]
  for record in train:
    assert record["image"].shape == (4, 6, 3) and record["image"].dtype == np.uint8
  val = builder.as_data_source(split="validation")
  labels = {int(str(r["file_name"])[-13:-6]): int(r["label"]) for r in val}
  assert labels == {n: classes.index(synsets[n - 1]) for n in kept_val}


def test_errors_name_the_missing_archive_and_a_bad_member(tmp_path):
  (tmp_path / "manual").mkdir()
  (tmp_path / "manual" / builder_module.VAL_ARCHIVE).write_bytes(b"")  # only the val archive
  builder = builder_module.Builder(data_dir=str(tmp_path / "data"))
  with pytest.raises(FileNotFoundError, match="ILSVRC2012_img_train.tar"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "manual")))
  with pytest.raises(ValueError, match="ILSVRC2012_val_<n>"):
    builder_module.validation_synset("val_7.JPEG", ["n01440764"])


def test_registered():
  import tfds_builders  # pylint: disable=g-import-not-at-top
  assert tfds.builder_cls("imagenet100") is tfds_builders.BUILDERS["imagenet100"]
