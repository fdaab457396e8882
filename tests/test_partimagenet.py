"""PartImageNet builder on a two-image release written in the official format (COCO-style
`<split>.json` next to `<split>/<synset>/<file>.JPEG`): label maps by hand (polygon,
two-point polygon -> box, area-0 skipped, later annotations on top), features, metadata,
registration, and the errors for a zipped split, a malformed file and a wrong image size."""
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tfds_builders import bad_files
from tfds_builders.partimagenet import partimagenet_dataset_builder as builder_module
from tfds_builders.partimagenet import release_files

CATEGORIES = [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"},
              {"id": 1, "name": "Quadruped Body", "supercategory": "Quadruped"},
              {"id": 2, "name": "Fish Head", "supercategory": "Fish"}]


def _rectangle(x0, y0, x1, y1):
  return [x0, y0, x0, y1, x1, y1, x1, y0]


def write_release(root: pathlib.Path, *, size=(12, 16)) -> pathlib.Path:
  """PartImageNet_OOD/{train,val}.json + images, as the unzipped release."""
  top = root / "PartImageNet_OOD"
  rng = np.random.default_rng(0)
  height, width = size
  splits = {
      "train": [("n01440764_10029.JPEG", 11, [
          {"id": 1, "image_id": 11, "category_id": 1, "segmentation": [_rectangle(2, 1, 10, 9)],
           "area": 64.0, "bbox": [2, 1, 8, 8], "iscrowd": 0},
          {"id": 2, "image_id": 11, "category_id": 0, "segmentation": [_rectangle(8, 0, 12, 3)],
           "area": 12.0, "bbox": [8, 0, 4, 3], "iscrowd": 0},
          {"id": 3, "image_id": 11, "category_id": 2, "segmentation": [[0, 0, 5, 5]],
           "area": 0.0, "bbox": [0, 0, 5, 5], "iscrowd": 0}])],
      "val": [("n02009229_11045.JPEG", 5, [
          {"id": 7, "image_id": 5, "category_id": 2, "segmentation": [[13, 4, 15, 10]],
           "area": 12.0, "bbox": [13, 4, 2, 6], "iscrowd": 0}])],
  }
  for split, images in splits.items():
    records, annotations = [], []
    for file_name, image_id, anns in images:
      folder = top / split / file_name.split("_")[0]
      folder.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
          folder / file_name, format="JPEG")
      records.append({"file_name": file_name, "height": height, "width": width,
                      "id": image_id})
      annotations += anns
    (top / f"{split}.json").write_text(json.dumps(
        {"images": records, "annotations": annotations, "categories": CATEGORIES}))
  return root


def test_builds_label_maps_and_metadata(tmp_path):
  manual = write_release(tmp_path / "manual")
  builder = builder_module.Builder(data_dir=str(tmp_path / "data"))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual)))
  assert builder.info.file_format.value == "array_record"
  meta = builder.info.metadata
  assert meta["part_classes"] == ["background", "Quadruped Head", "Quadruped Body",
                                  "Fish Head"]
  assert meta["object_classes"] == ["background", "Quadruped", "Fish"]
  assert meta["part_to_object"] == [0, 1, 1, 2]
  train = builder.as_data_source(split="train")[0]
  assert train["image/id"] == b"n01440764_10029" or train["image/id"] == "n01440764_10029"
  assert train["label"] == builder_module.imagenet_synsets().index("n01440764") == 0
  expected = np.zeros((12, 16), np.uint8)
  expected[1:9, 2:10] = 2        # body: columns 2..9, rows 1..8
  expected[0:3, 8:12] = 1        # head on top of it; the area-0 annotation is skipped
  np.testing.assert_array_equal(train["part_class"], expected)
  np.testing.assert_array_equal(train["object_class"], (expected > 0).astype(np.uint8))
  instances = np.zeros((12, 16), np.int32)
  instances[1:9, 2:10], instances[0:3, 8:12] = 1, 2
  np.testing.assert_array_equal(train["part_instances"], instances)
  assert train["image"].shape == (12, 16, 3)
  val = builder.as_data_source(split="val")[0]
  box = np.zeros((12, 16), np.uint8)
  box[4:10, 13:15] = 3  # a two-point polygon is its bbox [13, 4, 2, 6]
  np.testing.assert_array_equal(val["part_class"], box)
  np.testing.assert_array_equal(val["object_class"], (box > 0) * 2)


def test_registered_and_layout_errors(tmp_path):
  import tfds_builders  # pylint: disable=g-import-not-at-top
  assert tfds.builder_cls("partimagenet") is tfds_builders.BUILDERS["partimagenet"]
  zipped = tmp_path / "zipped"
  zipped.mkdir()
  (zipped / "test.json").write_text("{}")
  (zipped / "test.zip").write_bytes(b"PK")
  with pytest.raises(FileNotFoundError, match="unzip .*test.zip"):
    release_files.find_splits(zipped)
  with pytest.raises(FileNotFoundError, match="no split found"):
    release_files.find_splits(tmp_path / "empty")
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.JPEG", "height": 2}],
                             "annotations": [], "categories": CATEGORIES}))
  with pytest.raises(ValueError, match=r"bad.json: images\[0\]: field 'width'"):
    release_files.read_release(bad)


def test_image_size_must_match_the_annotation(tmp_path):
  manual = write_release(tmp_path / "manual")
  top = manual / "PartImageNet_OOD"
  release = release_files.read_release(top / "train.json")
  image = release.images[0]
  wrong = release_files.ImageRecord(image.id, image.file_name, 13, 16, image.annotations)
  with pytest.raises(bad_files.BadFileError, match="decoded size"):
    builder_module.make_example(release, top / "train", wrong, {"n01440764": 0})
