"""The HiPoSeg datasets from their release layouts: Cityscapes (19 -> 7), ADE20K (150
classes, no shipped tree) and Mapillary Vistas v2.0 (124 -> 17 -> 7).

Tables are checked against independent transcriptions (HSSN's Cityscapes `hiera_map`, the
category column of cityscapesScripts, LogicSeg's ranges read by hand); builders run on tiny
fixtures written in the releases' exact file layouts and formats (8-bit RGB / grey PNGs for
Cityscapes, JPEG + grey PNG for ADE20K, JPEG + palette PNG + config_v2.0.json for Mapillary).
"""
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jhseg import label_tree as label_tree_lib
from tfds_builders import bad_files
from tfds_builders import semantic_release
from tfds_builders.ade20k import ade20k_dataset_builder
from tfds_builders.ade20k import classes as ade20k_classes
from tfds_builders.cityscapes_hier import cityscapes_hier_dataset_builder
from tfds_builders.cityscapes_hier import classes as cityscapes_classes
from tfds_builders.mapillary_vistas import classes as mapillary_classes
from tfds_builders.mapillary_vistas import mapillary_vistas_dataset_builder

# HSSN (qhanghu/HSSN_pytorch, losses/hiera_triplet_loss_cityscape.py): train id -> category.
HSSN_CITYSCAPES_HIERA_MAP = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6]


def _rgb(shape, seed, path: pathlib.Path, fmt: str) -> None:
  rng = np.random.default_rng(seed)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(rng.integers(0, 256, (*shape, 3), np.uint8)).save(path, fmt)


def _grey_png(values: np.ndarray, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(values.astype(np.uint8), mode="L").save(path, "PNG")


def _build(builder_cls, manual_dir: pathlib.Path, data_dir: pathlib.Path):
  builder = builder_cls(data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _examples(builder, split):
  source = builder.as_data_source(split=split)
  examples = [dict(source[i]) for i in range(len(source))]
  for example in examples:
    example["image/id"] = example["image/id"].decode()
  return sorted(examples, key=lambda e: e["image/id"])


# ----------------------------------------------------------------------------- Cityscapes


def test_cityscapes_tree_matches_the_official_table_and_hssn():
  tree = cityscapes_classes.label_tree()
  assert tree.level_names == ("class", "category")
  assert tree.num_classes(0) == 19 and tree.num_classes(1) == 7
  assert tree.class_names[1] == ("flat", "construction", "object", "nature", "sky", "human",
                                 "vehicle")
  np.testing.assert_array_equal(tree.fine_to_level(1), HSSN_CITYSCAPES_HIERA_MAP)
  # Independent path through the table: label id -> catId (1..7) for every evaluated label.
  for row in cityscapes_classes.TABLE["labels"]:
    if 0 <= row["train_id"] < 255:
      assert tree.class_names[0][row["train_id"]] == row["name"]
      assert tree.fine_to_level(1)[row["train_id"]] == row["category_id"] - 1


def test_cityscapes_label_ids_to_train_ids_to_categories():
  # road 7, sidewalk 8, parking 9 (not evaluated), building 11, person 24, bicycle 33,
  # unlabeled 0, ego vehicle 1.
  ids = np.array([[7, 8, 9, 11], [24, 33, 0, 1]], np.uint8)
  train = cityscapes_classes.train_ids(ids, source="x.png")
  np.testing.assert_array_equal(train, [[0, 1, 255, 2], [11, 18, 255, 255]])
  assert train.dtype == np.uint8
  categories = cityscapes_classes.label_tree().map_labels(train, "category")
  np.testing.assert_array_equal(categories, [[0, 0, 255, 1], [5, 6, 255, 255]])
  with pytest.raises(bad_files.BadFileError, match=r"x\.png: label ids \[34, 200\]"):
    cityscapes_classes.train_ids(np.array([[7, 34], [200, 0]], np.uint8), source="x.png")


def _cityscapes_release(root: pathlib.Path) -> dict[str, np.ndarray]:
  """Two train images (two cities), one val image; returns the expected train ids."""
  expected = {}
  for split, city, seq, ids in [
      ("train", "aachen", "000000_000019", [[7, 8, 11, 0], [21, 23, 24, 26], [1, 9, 33, 31]]),
      ("train", "bochum", "000000_000313", [[26, 26, 24, 25], [7, 7, 7, 7], [17, 19, 20, 22]]),
      ("val", "frankfurt", "000000_000294", [[23, 23, 12, 13], [27, 28, 32, 4], [5, 6, 3, 2]])]:
    ids = np.asarray(ids, np.uint8)
    stem = f"{city}_{seq}"
    _rgb(ids.shape, len(expected), root / "leftImg8bit" / split / city /
         f"{stem}_leftImg8bit.png", "PNG")
    _grey_png(ids, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    expected[stem] = cityscapes_classes.LABEL_ID_TO_TRAIN_ID[ids]
  return expected


def test_cityscapes_builder_from_the_release_layout(tmp_path):
  expected = _cityscapes_release(tmp_path / "manual")
  builder = _build(cityscapes_hier_dataset_builder.Builder, tmp_path / "manual",
                   tmp_path / "tfds")
  assert builder.info.file_format.value == "array_record"
  assert set(builder.info.splits) == {"train", "validation"}
  tree = label_tree_lib.LabelTree.from_metadata(builder.info.metadata)
  assert tree == cityscapes_classes.label_tree()
  examples = _examples(builder, "train") + _examples(builder, "validation")
  assert [e["image/id"] for e in examples] == ["aachen_000000_000019", "bochum_000000_000313",
                                               "frankfurt_000000_000294"]
  # Hand-computed for the first image: road, sidewalk, building, ignore / vegetation, sky,
  # person, car / ignore, ignore (parking), bicycle, train.
  np.testing.assert_array_equal(examples[0]["label"], [[0, 1, 2, 255], [8, 10, 11, 13],
                                                       [255, 255, 18, 16]])
  for example in examples:
    np.testing.assert_array_equal(example["label"], expected[example["image/id"]])
    assert example["image"].shape == (3, 4, 3)


def test_cityscapes_builder_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train: missing"):
    cityscapes_hier_dataset_builder.split_pairs(tmp_path, "train")
  _cityscapes_release(tmp_path)
  label = tmp_path / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
  _grey_png(np.full((3, 4), 40), label)
  pairs = cityscapes_hier_dataset_builder.split_pairs(tmp_path, "train")
  with pytest.raises(bad_files.BadFileError, match=r"aachen_000000_000019_gtFine_labelIds\.png"
                                                   r": label ids \[40\]"):
    semantic_release.make_example(*pairs[0], cityscapes_classes.LABEL_ID_TO_TRAIN_ID,
                                  image_format="PNG")
  _grey_png(np.zeros((2, 4)), label)
  with pytest.raises(bad_files.BadFileError, match=r"label map of shape \(2, 4\) but its image"):
    semantic_release.make_example(*pairs[0], cityscapes_classes.LABEL_ID_TO_TRAIN_ID,
                                  image_format="PNG")
  Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(label, "PNG")
  with pytest.raises(bad_files.BadFileError, match=r"single-channel label PNG .* mode RGB"):
    semantic_release.make_example(*pairs[0], cityscapes_classes.LABEL_ID_TO_TRAIN_ID,
                                  image_format="PNG")


# ----------------------------------------------------------------------------- ADE20K


def test_ade20k_classes_and_missing_tree():
  assert ade20k_classes.NUM_CLASSES == 150 == len(set(ade20k_classes.CLASSES))
  assert ade20k_classes.CLASSES[:3] == ("wall", "building", "sky")
  assert ade20k_classes.CLASSES[-1] == "flag"
  np.testing.assert_array_equal(ade20k_classes.ANNOTATION_TO_CLASS[[0, 1, 2, 150]],
                                [255, 0, 1, 149])
  assert ade20k_classes.ANNOTATION_TO_CLASS[151] == -1  # not a release value
  with pytest.raises(ValueError, match="no 150 -> 14 label tree is shipped"):
    ade20k_classes.label_tree()


def test_ade20k_builder_from_the_release_layout(tmp_path):
  root = tmp_path / "manual" / "ADEChallengeData2016"
  annotations = {
      ("training", "ADE_train_00000001"): [[0, 1, 2], [150, 3, 0]],
      ("validation", "ADE_val_00000001"): [[13, 13, 0], [1, 149, 150]]}
  for k, ((folder, stem), values) in enumerate(annotations.items()):
    _rgb((2, 3), k, root / "images" / folder / f"{stem}.jpg", "JPEG")
    _grey_png(np.asarray(values), root / "annotations" / folder / f"{stem}.png")
  builder = _build(ade20k_dataset_builder.Builder, tmp_path / "manual", tmp_path / "tfds")
  assert builder.info.file_format.value == "array_record"
  assert builder.info.metadata["class_names"] == list(ade20k_classes.CLASSES)
  train, = _examples(builder, "train")
  validation, = _examples(builder, "validation")
  assert train["image/id"] == "ADE_train_00000001"
  np.testing.assert_array_equal(train["label"], [[255, 0, 1], [149, 2, 255]])
  np.testing.assert_array_equal(validation["label"], [[12, 12, 255], [0, 148, 149]])
  with pytest.raises(FileNotFoundError, match="expected the extracted ADEChallengeData2016"):
    ade20k_dataset_builder.release_root(tmp_path)


# ----------------------------------------------------------------------------- Mapillary


def test_mapillary_tree_is_logicseg_ranges():
  tree = mapillary_classes.label_tree()
  assert [tree.num_classes(l) for l in range(3)] == [124, 17, 7]
  mid = lambda name: tree.class_names[1][tree.fine_to_level(1)[tree.class_id(name)]]
  top = lambda name: tree.class_names[2][tree.fine_to_level(2)[tree.class_id(name)]]
  # Read by hand from LogicSeg's ranges: [30, 32) person, [90, 96) traffic_light, ...
  assert mid("Bird") == "animal" and top("Bird") == "animal"
  assert mid("Individual") == "person" and top("Individual") == "human"
  assert mid("Bicyclist") == "rider" and top("Other Rider") == "human"
  assert mid("Lane Marking - Zigzag Line") == "marking_continuous"
  assert mid("Lane Marking - Text") == "marking_discrete" and top("Lane Marking - Text") == \
      "marking"
  assert mid("Traffic Light - Cyclists") == "traffic_light" and top("Car") == "object_"
  assert mid("Unlabeled") == "void" == top("Unlabeled")  # outside every range -> void
  np.testing.assert_array_equal(np.bincount(tree.fine_to_level(1)),
                                [2, 10, 14, 4, 2, 3, 3, 17, 4, 7, 12, 6, 6, 6, 9, 12, 7])


def _mapillary_release(root: pathlib.Path, *, num_labels: int = 124) -> None:
  labels = [{"color": [k, k, k], "instances": False, "readable": name,
             "name": f"group--{k}", "evaluate": True}
            for k, name in enumerate(mapillary_classes.CLASSES[:num_labels])]
  root.mkdir(parents=True, exist_ok=True)
  (root / "config_v2.0.json").write_text(json.dumps({"labels": labels, "version": "2.0"}))
  palette = np.arange(256 * 3, dtype=np.uint8) % 251
  for k, (folder, key, values) in enumerate([
      ("training", "0035fkbjWljhaftpVM37-g", [[0, 30, 123], [61, 108, 12]]),
      ("validation", "_1Gn_xkw7sa_i9GU4mkxxQ", [[123, 123, 90], [35, 2, 117]])]):
    _rgb((2, 3), k, root / folder / "images" / f"{key}.jpg", "JPEG")
    label = Image.fromarray(np.asarray(values, np.uint8), mode="P")
    label.putpalette(palette.tolist())
    (root / folder / "v2.0" / "labels").mkdir(parents=True)
    label.save(root / folder / "v2.0" / "labels" / f"{key}.png", "PNG")


def test_mapillary_builder_from_the_release_layout(tmp_path):
  _mapillary_release(tmp_path / "manual")
  builder = _build(mapillary_vistas_dataset_builder.Builder, tmp_path / "manual",
                   tmp_path / "tfds")
  assert builder.info.file_format.value == "array_record"
  assert label_tree_lib.LabelTree.from_metadata(builder.info.metadata) == \
      mapillary_classes.label_tree()
  assert builder.info.metadata["release_names"] == list(mapillary_classes.CLASSES)
  train, = _examples(builder, "train")
  validation, = _examples(builder, "validation")
  # Palette indices are the classes (a colour conversion would have lost them).
  np.testing.assert_array_equal(train["label"], [[0, 30, 123], [61, 108, 12]])
  np.testing.assert_array_equal(validation["label"], [[123, 123, 90], [35, 2, 117]])


def test_mapillary_config_checked(tmp_path):
  _mapillary_release(tmp_path, num_labels=66)
  with pytest.raises(ValueError, match=r"config_v2\.0\.json: field `labels` has 66 entries"):
    mapillary_vistas_dataset_builder.read_release_names(tmp_path / "config_v2.0.json")
