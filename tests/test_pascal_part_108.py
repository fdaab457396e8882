"""PASCAL-Part-108 builder: the class table against GMNet's list, name merging, the label
maps of the 18-image shared sample (every part pixel -> one of 108 classes, objects -> 21,
tree consistent), splits, errors."""
import re

import numpy as np
import pytest

from jhseg import label_tree
from tfds_builders.pascal_part_108 import classes
from tfds_builders.pascal_part_108 import labels
from tfds_builders.pascal_part_108 import pascal_part_108_dataset_builder as builder_module
from tfds_builders.ultrametric_pascal_part import pascal_part_mat

SAMPLE = "pascal_part_sample"
# GMNet spells three object prefixes differently from VOC.
GMNET_OBJECT_SPELLING = {"birds": "bird", "dining": "diningtable"}


def test_table_has_108_parts_under_21_objects():
  assert classes.NUM_PART_CLASSES == 108 and classes.NUM_OBJECT_CLASSES == 21
  tree = classes.label_tree()
  assert isinstance(tree, label_tree.LabelTree)  # construction checks every object has parts
  np.testing.assert_array_equal(tree.fine_to_level("object"), classes.PART_TO_OBJECT)
  # GMNet's part ranges per object (map_parts_to_classes(21, 108)): counts per object.
  counts = [1, 5, 4, 8, 1, 2, 8, 7, 9, 1, 8, 1, 10, 8, 4, 12, 2, 8, 1, 7, 1]
  np.testing.assert_array_equal(np.bincount(classes.PART_TO_OBJECT), counts)
  assert set(classes.SILHOUETTE_OBJECTS) == {"boat", "chair", "diningtable", "sofa"}


def test_merge_table_agrees_with_gmnet_names():
  # Each GMNet name "<object>_<one representative release name>" must be one of the
  # release names our table merges into that class (or the object itself for
  # silhouettes): the table and GMNet's list were written independently.
  gmnet = classes.TABLE["gmnet_part_names"]
  assert len(gmnet) == 108
  for part_id, name in enumerate(gmnet[1:], start=1):
    prefix, _, suffix = name.partition("_")
    obj = GMNET_OBJECT_SPELLING.get(prefix, prefix)
    assert classes.OBJECT_CLASSES[classes.PART_TO_OBJECT[part_id]] == obj, name
    if obj in classes.SILHOUETTE_OBJECTS:
      assert classes.PART_CLASSES[part_id] == obj
    else:
      # GMNet writes numbered release parts (engine_1, window_2, ...) without the number.
      numbered = suffix in {re.sub(r"_#$", "", raw) for raw in classes.RAW_PART_NAMES[obj]
                            if raw.endswith("_#")}
      release_name = suffix + "_1" if numbered else suffix
      assert classes.part_class_id(obj, release_name) == part_id, name


def test_release_names_merge_and_ignore():
  assert classes.part_class_id("cat", "lbpa") == classes.part_class_id("cat", "rfpa") == \
      classes.PART_CLASSES.index("cat/paw")
  assert classes.part_class_id("car", "wheel_7") == classes.PART_CLASSES.index("car/wheel")
  assert classes.part_class_id("train", "cleftside_3") == classes.PART_CLASSES.index(
      "train/coachside")
  assert classes.part_class_id("person", "lebrow") == classes.IGNORE_LABEL
  assert classes.part_class_id("bird", "reye") == classes.IGNORE_LABEL
  assert classes.object_class_id("table") == classes.OBJECT_CLASSES.index("diningtable")
  with pytest.raises(KeyError, match=r"unknown part 'wing' of a 'cat' object; valid part "
                                     r"names: .*lbleg"):
    classes.part_class_id("cat", "wing")
  with pytest.raises(KeyError, match="has no parts"):
    classes.part_class_id("boat", "hull")


def _annotation(shape, objects):
  parts = lambda specs: tuple(pascal_part_mat.Part(n, m) for n, m in specs)
  return pascal_part_mat.PascalPartAnnotation("x", tuple(
      pascal_part_mat.AnnotatedObject(c, pascal_part_mat.VOC_CLASSES.index(c) + 1, m,
                                      parts(p)) for c, m, p in objects))


def test_class_maps_hand_built():
  box = lambda r0, r1, c0, c1: np.pad(np.ones((r1 - r0, c1 - c0), bool),
                                      ((r0, 6 - r1), (c0, 6 - c1)))
  cat = box(0, 4, 0, 4)
  annotation = _annotation((6, 6), [
      ("cat", cat, [("head", box(0, 2, 0, 2)), ("leye", box(0, 1, 0, 1)),
                    ("tail", box(3, 4, 0, 4))]),
      ("table", box(2, 6, 2, 6), []),
  ])
  objects, parts = labels.class_maps(annotation, (6, 6))
  cat_id, table_id = classes.object_class_id("cat"), classes.object_class_id("table")
  head, eye, tail = (classes.PART_CLASSES.index(f"cat/{p}") for p in ("head", "eye", "tail"))
  table_part = classes.PART_CLASSES.index("diningtable")
  expected_parts = np.array([
      [eye, head, 255, 255, 0, 0],
      [head, head, 255, 255, 0, 0],
      [255, 255, table_part, table_part, table_part, table_part],
      [tail, tail, table_part, table_part, table_part, table_part],
      [0, 0, table_part, table_part, table_part, table_part],
      [0, 0, table_part, table_part, table_part, table_part]])
  np.testing.assert_array_equal(parts, expected_parts)
  expected_objects = np.where(cat, cat_id, 0)
  expected_objects[2:, 2:] = table_id
  np.testing.assert_array_equal(objects, expected_objects)
  classes.label_tree().check_consistent(parts, objects, source="hand-built")
  bad = _annotation((6, 6), [("cat", cat, [("wing", cat)])])
  with pytest.raises(labels.UnknownPartError,
                     match=r"file\.mat: anno\.objects\(1\)\.parts\(1\)\.part_name: unknown"):
    labels.class_maps(bad, (6, 6), source="file.mat")


def test_split_lists_and_fallback(tmp_path):
  ids = ["2008_000001", "2008_000002", "2008_000003", "2008_000004", "2008_000005"]
  splits, rule = builder_module.split_ids(tmp_path, ids)
  assert splits == {"train": ("2008_000001", "2008_000003", "2008_000005"),
                    "test": ("2008_000002", "2008_000004")}
  assert "NOT the benchmark split" in rule
  (tmp_path / "train.txt").write_text("2008_000004\n2008_000001\n2009_999999\n")
  (tmp_path / "val.txt").write_text("2008_000002 1\n\n2008_000005\n")
  splits, rule = builder_module.split_ids(tmp_path, ids)
  assert splits == {"train": ("2008_000001", "2008_000004"),
                    "test": ("2008_000002", "2008_000005")}
  (tmp_path / "val.txt").write_text("2008_000004\n")
  with pytest.raises(ValueError, match="share ids"):
    builder_module.split_ids(tmp_path, ids)


@pytest.fixture(scope="module")
def sample_build(shared_data, tmp_path_factory):
  import tensorflow_datasets as tfds
  builder = builder_module.Builder(data_dir=str(tmp_path_factory.mktemp("tfds")))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(shared_data / SAMPLE)))
  examples = [builder.as_data_source(split=split)[i] for split in builder.info.splits
              for i in range(builder.info.splits[split].num_examples)]
  return builder, examples


def test_sample_build_maps_every_part_pixel_and_keeps_the_tree(sample_build, shared_data):
  builder, examples = sample_build
  assert builder.info.file_format.value == "array_record"
  assert builder.info.splits["train"].num_examples == 9
  assert builder.info.splits["test"].num_examples == 9
  tree = label_tree.LabelTree.from_metadata(builder.info.metadata)
  assert tree == classes.label_tree()
  annotations_dir = shared_data / SAMPLE / "Annotations_Part"
  seen_parts = set()
  for example in examples:
    image_id = example["image/id"].decode() if isinstance(example["image/id"], bytes) \
        else example["image/id"]
    objects, parts = example["object_class"], example["part_class"]
    assert objects.shape == parts.shape == example["image"].shape[:2]
    assert set(np.unique(objects)) <= set(range(21))
    assert set(np.unique(parts)) <= set(range(108)) | {255}
    tree.check_consistent(parts, objects, source=image_id)
    annotation = pascal_part_mat.read_annotation(annotations_dir / f"{image_id}.mat")
    covered_later = np.zeros(objects.shape, bool)
    for obj in reversed(annotation.objects):  # later objects are painted on top
      visible = obj.mask & ~covered_later
      assert np.all(objects[visible] == classes.object_class_id(obj.class_name))
      for part in obj.parts:
        part_id = classes.part_class_id(obj.class_name, part.name)
        pixels = part.mask & ~covered_later
        if part_id != classes.IGNORE_LABEL:
          # Every part pixel (unless a later object or a later part covers it) maps to
          # one of the 108 classes, that of its name.
          later = np.zeros_like(pixels)
          for other in obj.parts[obj.parts.index(part) + 1:]:
            later |= other.mask
          assert np.all(parts[pixels & ~later] == part_id), (image_id, part.name)
          seen_parts.add(part_id)
      covered_later |= obj.mask | np.any([p.mask for p in obj.parts] or
                                         [np.zeros_like(obj.mask)], axis=0)
    assert np.all(parts[objects == 0] == 0)  # background is background at both levels
  # The sample has people, cars, animals...: many distinct part classes are exercised.
  assert len(seen_parts) > 20
  assert {classes.PART_CLASSES[p].split("/")[0] for p in seen_parts} >= {
      "person", "car", "bird", "cat", "dog"}
