"""Tests of the Ultrametric Pascal-Part builder: reading, stacking, splits, targets, TFDS build.

Real-data tests use the 18 original Pascal-Part annotations of ../shared/data (skipped when
absent); format tests use fixtures written in the release format (MATLAB structs via
scipy.io.savemat, the same layout `loadmat` returns for the real files).
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import scipy.io
import scipy.ndimage

from tfds_builders.ultrametric_pascal_part import context_mat
from tfds_builders.ultrametric_pascal_part import layout
from tfds_builders.ultrametric_pascal_part import pascal_part_mat
from tfds_builders.ultrametric_pascal_part import splits
from tfds_builders.ultrametric_pascal_part import stacking

SAMPLE = "pascal_part_sample"


# ----------------------------------------------------------------------------------------------
# Fixtures in the release formats.

def _struct(shape, fields, rows):
  """A MATLAB struct array (numpy structured object array) that savemat writes as a struct."""
  array = np.empty(shape, dtype=[(f, "O") for f in fields])
  for element, row in zip(array.reshape(-1), rows):
    for field in fields:
      element[field] = row[field]
  return array


def write_pascal_part_mat(path, imname, objects):
  """Writes `anno` as in Annotations_Part: objects = [(class, class_ind, mask, [(name, mask)])]."""
  object_rows = []
  for class_name, class_ind, mask, parts in objects:
    part_rows = [{"part_name": name, "mask": np.asarray(m, np.uint8)} for name, m in parts]
    object_rows.append({
        "class": class_name, "class_ind": np.array([[class_ind]], np.uint8),
        "mask": np.asarray(mask, np.uint8),
        "parts": _struct((1, len(part_rows)) if part_rows else (0, 0), ("part_name", "mask"),
                         part_rows)})
  anno = _struct((1, 1), ("imname", "objects"), [{
      "imname": imname,
      "objects": _struct((1, len(object_rows)), ("class", "class_ind", "mask", "parts"),
                         object_rows)}])
  scipy.io.savemat(path, {"anno": anno})


def write_context_mat(path, label_map):
  """Writes a PASCAL-Context `trainval/<id>.mat`: one uint16 variable LabelMap."""
  scipy.io.savemat(path, {"LabelMap": np.asarray(label_map, np.uint16)})


def write_jpeg(path, shape, seed=0):
  from PIL import Image
  pixels = np.random.default_rng(seed).integers(0, 256, shape + (3,), dtype=np.uint8)
  Image.fromarray(pixels).save(path, quality=95)


def _rect(shape, rows, cols):
  mask = np.zeros(shape, bool)
  mask[rows[0]:rows[1], cols[0]:cols[1]] = True
  return mask


# A 6x8 scene computed by hand (see test_stack_hand_built): a person (30 px) with parts listed
# small-first (`leye` inside `head`) and an uncovered remainder, overlapped by a smaller chair.
TINY_SHAPE = (6, 8)
TINY_OBJECTS = [
    ("person", 15, _rect(TINY_SHAPE, (0, 6), (0, 5)),
     [("leye", _rect(TINY_SHAPE, (1, 2), (1, 3))), ("head", _rect(TINY_SHAPE, (0, 3), (0, 5)))]),
    ("chair", 9, _rect(TINY_SHAPE, (2, 6), (3, 8)), []),
]
TINY_INSTANCES = np.array([
    [1, 1, 1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 1, 0, 0, 0],
    [1, 1, 1, 2, 2, 2, 2, 2],
    [1, 1, 1, 2, 2, 2, 2, 2],
    [1, 1, 1, 2, 2, 2, 2, 2],
    [1, 1, 1, 2, 2, 2, 2, 2]])
# Part ids: leye 1, head 2 (annotation order), person remainder 3, chair (no parts) 4.
TINY_PARTS = np.array([
    [2, 2, 2, 2, 2, 0, 0, 0],
    [2, 1, 1, 2, 2, 0, 0, 0],
    [2, 2, 2, 4, 4, 4, 4, 4],
    [3, 3, 3, 4, 4, 4, 4, 4],
    [3, 3, 3, 4, 4, 4, 4, 4],
    [3, 3, 3, 4, 4, 4, 4, 4]])
# Its HGM edge weights by hand: h[i, j] is (i,j)-(i,j+1), v[i, j] is (i,j)-(i+1,j).
TINY_H = np.array([
    [0, 0, 0, 0, 1, 0, 0],
    [.5, 0, .5, 0, 1, 0, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0],
    [0, 0, 1, 0, 0, 0, 0]], np.float32)
TINY_V = np.array([
    [0, .5, .5, 0, 0, 0, 0, 0],
    [0, .5, .5, 1, 1, 1, 1, 1],
    [.5, .5, .5, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0]], np.float32)


# ----------------------------------------------------------------------------------------------
# Independent checks on interpixel maps (NumPy / scipy.ndimage only, no builder code).

def split_interpixel(ucm):
  return ucm[0::2, 1::2], ucm[1::2, 0::2]


def check_interpixel_layout(ucm):
  h, v = split_interpixel(ucm)
  np.testing.assert_array_equal(ucm[0::2, 0::2], 0)
  corners = np.maximum(np.maximum(h[:-1, :], h[1:, :]), np.maximum(v[:, :-1], v[:, 1:]))
  np.testing.assert_array_equal(ucm[1::2, 1::2], corners)


def regions_below(ucm, threshold):
  """Pixel labels of the connected components joined by edges with weight < threshold."""
  passable = ucm < threshold
  passable[1::2, 1::2] = False  # corners do not connect pixels
  labels, _ = scipy.ndimage.label(passable)  # 4-connectivity on the interpixel grid
  return labels[0::2, 0::2]


def edge_pairs(a):
  """(left, right) and (up, down) values of a pixel map along h and v edges."""
  return (a[:, :-1], a[:, 1:]), (a[:-1, :], a[1:, :])


def assert_closed_contours(ucm, threshold):
  """Every edge with weight >= threshold separates two different regions below threshold."""
  regions = regions_below(ucm, threshold)
  for weights, (p, q) in zip(split_interpixel(ucm), edge_pairs(regions)):
    assert np.all(p[weights >= threshold] != q[weights >= threshold]), threshold


def num_pairs(a, b):
  """Number of distinct (a, b) label pairs over the pixels (= #labels of a iff a nests in b)."""
  return np.unique(a.astype(np.int64) * (int(b.max()) + 1) + b).size


def raw_loadmat_objects(path):
  """Class names, indices, masks of a Pascal-Part file read without the builder's reader."""
  anno = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["anno"]
  objects = np.atleast_1d(anno.objects)
  return [(str(o.__dict__["class"]), int(o.class_ind), np.asarray(o.mask, bool)) for o in objects]


# ----------------------------------------------------------------------------------------------
# Reader.

def test_reader_on_real_sample_matches_readme_counts(shared_data):
  """Class counts and part-less objects match shared/data/README.md (an independent account)."""
  files = sorted((shared_data / SAMPLE / "Annotations_Part").glob("*.mat"))
  assert len(files) == 18
  counts = collections.Counter()
  without_parts = collections.Counter()
  for path in files:
    annotation = pascal_part_mat.read_annotation(path)
    assert annotation.image_id == path.stem
    raw = raw_loadmat_objects(path)
    assert len(raw) == len(annotation.objects)
    for obj, (name, index, mask) in zip(annotation.objects, raw):
      assert (obj.class_name, obj.class_index) == (name, index)
      np.testing.assert_array_equal(obj.mask, mask)
      counts[obj.class_name] += 1
      without_parts[obj.class_name] += not obj.parts
  assert counts == {"person": 19, "chair": 7, "car": 5, "bird": 4, "tvmonitor": 4, "cat": 3,
                    "dog": 3, "bottle": 3, "boat": 1, "table": 1, "aeroplane": 1, "bus": 1,
                    "horse": 1}
  assert +without_parts == {"chair": 7, "boat": 1, "table": 1, "tvmonitor": 1}


def test_reader_round_trips_fixture(tmp_path):
  path = tmp_path / "2000_000001.mat"
  write_pascal_part_mat(path, "2000_000001", TINY_OBJECTS)
  annotation = pascal_part_mat.read_annotation(path)
  assert annotation.image_id == "2000_000001"
  assert [(o.class_name, o.class_index) for o in annotation.objects] == [("person", 15),
                                                                         ("chair", 9)]
  assert [p.name for p in annotation.objects[0].parts] == ["leye", "head"]
  assert annotation.objects[1].parts == ()
  np.testing.assert_array_equal(annotation.objects[0].parts[1].mask, TINY_OBJECTS[0][3][1][1])


def _broken(tmp_path, kind):
  """Writes one malformed file; returns (path, field the error must name)."""
  path = tmp_path / "2000_000001.mat"
  person, chair = TINY_OBJECTS
  if kind == "not_a_mat":
    path.write_bytes(b"this is not a MATLAB file")
    return path, "MATLAB"
  if kind == "no_anno":
    scipy.io.savemat(path, {"annotation": np.zeros((2, 2))})
    return path, "`anno`"
  if kind == "class_ind_out_of_range":
    write_pascal_part_mat(path, "2000_000001", [person, ("chair", 25, chair[2], [])])
    return path, "`anno.objects(2).class_ind`"
  if kind == "class_name_mismatch":
    write_pascal_part_mat(path, "2000_000001", [person, ("sofa", 9, chair[2], [])])
    return path, "`anno.objects(2).class`"
  if kind == "part_mask_shape":
    parts = [("leye", np.zeros((3, 3), np.uint8))]
    write_pascal_part_mat(path, "2000_000001", [(*person[:3], parts), chair])
    return path, "`anno.objects(1).parts(1).mask`"
  if kind == "mask_values":
    write_pascal_part_mat(path, "2000_000001", [person, (*chair[:2], chair[2] * 3, [])])
    return path, "`anno.objects(2).mask`"
  if kind == "imname_mismatch":
    write_pascal_part_mat(path, "2000_000999", TINY_OBJECTS)
    return path, "`anno.imname`"
  raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["not_a_mat", "no_anno", "class_ind_out_of_range",
                                  "class_name_mismatch", "part_mask_shape", "mask_values",
                                  "imname_mismatch"])
def test_reader_errors_name_file_and_field(tmp_path, kind):
  path, field = _broken(tmp_path, kind)
  with pytest.raises(pascal_part_mat.PascalPartFormatError) as error:
    pascal_part_mat.read_annotation(path)
  assert str(path) in str(error.value)
  assert field in str(error.value)


def test_annotation_without_objects_gives_empty_target(tmp_path):
  path = tmp_path / "2000_000001.mat"
  write_pascal_part_mat(path, "2000_000001", [])
  annotation = pascal_part_mat.read_annotation(path)
  assert annotation.objects == ()
  stacked = stacking.stack(annotation, (4, 5))
  np.testing.assert_array_equal(stacked.instances, 0)
  np.testing.assert_array_equal(stacked.instance_classes, [0])
  from tfds_builders.ultrametric_pascal_part import targets
  ucm, instances, parts = targets.hierarchical_target(stacked.instances, stacked.parts)
  assert ucm.shape == (7, 9)
  np.testing.assert_array_equal(ucm, 0)
  np.testing.assert_array_equal(instances, 0)


def test_context_reader(tmp_path):
  labels = np.arange(12, dtype=np.uint16).reshape(3, 4) + 400  # beyond uint8 on purpose
  write_context_mat(tmp_path / "2000_000001.mat", labels)
  got = context_mat.read_label_map(tmp_path / "2000_000001.mat")
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, labels)
  scipy.io.savemat(tmp_path / "bad.mat", {"labels": labels})
  with pytest.raises(context_mat.ContextFormatError, match=r"bad\.mat: field `LabelMap`"):
    context_mat.read_label_map(tmp_path / "bad.mat")


# ----------------------------------------------------------------------------------------------
# Stacking.

def test_stack_hand_built(tmp_path):
  """Smaller parts/objects stay on top regardless of annotation order; remainder is a part."""
  path = tmp_path / "2000_000001.mat"
  write_pascal_part_mat(path, "2000_000001", TINY_OBJECTS)
  stacked = stacking.stack(pascal_part_mat.read_annotation(path), TINY_SHAPE)
  np.testing.assert_array_equal(stacked.instances, TINY_INSTANCES)
  np.testing.assert_array_equal(stacked.parts, TINY_PARTS)
  np.testing.assert_array_equal(stacked.instance_classes, [0, 15, 9])
  np.testing.assert_array_equal(stacked.part_instances, [0, 1, 1, 1, 2])
  assert stacked.part_names == ("background", "leye", "head", "remainder", "chair")
  assert stacked.instances.dtype == stacked.parts.dtype == np.int32


def _smallest_containing(masks):
  """Per pixel, the 1-based index of the smallest mask containing it (ties: the later one)."""
  areas = np.array([m.sum() for m in masks], float)
  stack = np.stack(masks)
  # Key: area first, then prefer the later index; pixels covered by no mask get index 0.
  key = np.where(stack, areas[:, None, None] - np.arange(len(masks))[:, None, None] * 1e-6,
                 np.inf)
  return np.where(stack.any(0), key.argmin(0) + 1, 0)


def test_stack_real_sample_smallest_on_top(shared_data):
  """On the real masks: each pixel goes to the smallest object (then part) containing it."""
  for path in sorted((shared_data / SAMPLE / "Annotations_Part").glob("*.mat")):
    annotation = pascal_part_mat.read_annotation(path)
    shape = annotation.objects[0].mask.shape
    stacked = stacking.stack(annotation, shape)
    np.testing.assert_array_equal(
        stacked.instances, _smallest_containing([o.mask for o in annotation.objects]))
    for k, obj in enumerate(annotation.objects, start=1):
      visible = stacked.instances == k
      first = np.flatnonzero(stacked.part_instances == k)[0]
      if obj.parts:
        winner = _smallest_containing([p.mask for p in obj.parts])
        expected = np.where(winner > 0, first + winner - 1, first + len(obj.parts))
      else:
        expected = np.full(shape, first)
      np.testing.assert_array_equal(stacked.parts[visible], expected[visible], err_msg=path.name)
    # Parts never overlap objects they do not belong to; background is background in both.
    np.testing.assert_array_equal(stacked.part_instances[stacked.parts], stacked.instances)
    np.testing.assert_array_equal(stacked.instance_classes[1:],
                                  [o.class_index for o in annotation.objects])


# ----------------------------------------------------------------------------------------------
# Splits and layout.

def _write_lines(path, ids):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(f"{i}\n" for i in ids))


def test_halve_val_sorted_first_half_val():
  val, test = splits.halve_val(("2008_5", "2008_1", "2008_4", "2008_2", "2008_3"))
  assert val == ("2008_1", "2008_2", "2008_3")
  assert test == ("2008_4", "2008_5")


@pytest.mark.parametrize("where", [".", "ImageSets/Main", "VOCdevkit/VOC2010/ImageSets/Main"])
def test_make_splits_from_voc_lists(tmp_path, where):
  _write_lines(tmp_path / where / "train.txt", ["a_1", "a_2", "a_9"])
  _write_lines(tmp_path / where / "val.txt", ["b_4", "b_1", "b_3", "b_2"])
  # Halves come from the whole list; ids without annotation (a_9, b_2) are dropped afterwards.
  got = splits.make_splits(tmp_path, ["a_1", "a_2", "b_1", "b_3", "b_4", "zzz"])
  assert (got.train, got.val, got.test) == (("a_1", "a_2"), ("b_1",), ("b_3", "b_4"))
  assert "PASCAL-Context" in got.rule


def test_make_splits_test_list_and_overlap(tmp_path):
  _write_lines(tmp_path / "train.txt", ["a_1"])
  _write_lines(tmp_path / "val.txt", ["b_2", "b_1"])
  _write_lines(tmp_path / "test.txt", ["c_1"])
  got = splits.make_splits(tmp_path, ["a_1", "b_1", "b_2", "c_1"])
  assert (got.train, got.val, got.test) == (("a_1",), ("b_1", "b_2"), ("c_1",))
  _write_lines(tmp_path / "test.txt", ["a_1"])
  with pytest.raises(ValueError, match="share ids"):
    splits.make_splits(tmp_path, ["a_1"])


# Looked up by hand in COB's voc_train/voc_val/voc_test.txt (github.com/kmaninis/COB).
SAMPLE_COB_SPLITS = {
    "train": ["2008_000726", "2008_003497", "2008_006462", "2009_001103", "2010_001199",
              "2010_002065", "2010_003057", "2010_005275", "2010_005511"],
    "val": ["2008_000652", "2008_000700", "2008_003228", "2010_002526"],
    "test": ["2008_000939", "2008_001978", "2008_005643", "2010_000145", "2010_005243"],
}


def test_cob_lists_are_the_paper_splits():
  lists = splits.cob_splits()
  assert {k: len(v) for k, v in lists.items()} == {"train": 4998, "val": 2607, "test": 2498}
  train, val, test = (set(lists[k]) for k in ("train", "val", "test"))
  assert not (train & val or train & test or val & test)
  assert len(train | val | test) == 10103  # every Pascal-Part image
  # First lines of COB's files: train starts with 2008_000008, val 2008_000002, test 2008_000003.
  assert (lists["train"][0], lists["val"][0], lists["test"][0]) == (
      "2008_000008", "2008_000002", "2008_000003")


def test_make_splits_defaults_to_cob(tmp_path):
  ids = sorted(sum(SAMPLE_COB_SPLITS.values(), ["1999_000001"]))
  got = splits.make_splits(tmp_path, ids)
  assert {k: list(getattr(got, k)) for k in SAMPLE_COB_SPLITS} == SAMPLE_COB_SPLITS
  assert got.rule.startswith("COB's") and "1 present ids in none of them left out" in got.rule
  # VOC's train/val lists (the PASCAL-Context lists COB halves) do not override COB's split.
  _write_lines(tmp_path / "ImageSets/Main/train.txt", SAMPLE_COB_SPLITS["train"])
  _write_lines(tmp_path / "ImageSets/Main/val.txt",
               SAMPLE_COB_SPLITS["val"] + SAMPLE_COB_SPLITS["test"])
  assert splits.make_splits(tmp_path, ids).test == tuple(SAMPLE_COB_SPLITS["test"])
  # A user's three lists do.
  _write_lines(tmp_path / "train.txt", ids[:2])
  _write_lines(tmp_path / "val.txt", ids[2:4])
  _write_lines(tmp_path / "test.txt", ids[4:])
  got = splits.make_splits(tmp_path, ids)
  assert (got.train, got.val, got.test) == (tuple(ids[:2]), tuple(ids[2:4]), tuple(ids[4:]))
  with pytest.raises(FileNotFoundError, match="COB split lists"):
    splits.make_splits(tmp_path / "empty", ids, cob_dir=tmp_path / "nowhere")


def test_fallback_split_rule():
  ids = [f"2010_{i:06d}" for i in range(18)][::-1]
  got = splits.fallback_splits(ids)
  position = {i: n for n, i in enumerate(sorted(ids))}
  assert {position[i] % 4 for i in got.train} == {0, 1}
  assert {position[i] % 4 for i in got.val} == {2} and {position[i] % 4 for i in got.test} == {3}
  assert (len(got.train), len(got.val), len(got.test)) == (10, 4, 4)
  assert sorted(got.train + got.val + got.test) == sorted(ids)


def test_layout_missing_release_names_archive(tmp_path):
  with pytest.raises(FileNotFoundError, match="Annotations_Part.*Pascal-Part trainval"):
    layout.find_layout(tmp_path, require_context=False)
  (tmp_path / "Annotations_Part").mkdir()
  write_pascal_part_mat(tmp_path / "Annotations_Part" / "2000_000001.mat", "2000_000001",
                        TINY_OBJECTS)
  with pytest.raises(FileNotFoundError, match="JPEGImages.*VOCtrainval_03-May-2010"):
    layout.find_layout(tmp_path, require_context=False)
  (tmp_path / "VOCdevkit/VOC2010/JPEGImages").mkdir(parents=True)
  write_jpeg(tmp_path / "VOCdevkit/VOC2010/JPEGImages/2000_000001.jpg", TINY_SHAPE)
  found = layout.find_layout(tmp_path, require_context=False)
  assert found.images_dir == tmp_path / "VOCdevkit/VOC2010/JPEGImages"
  assert found.context_dir is None
  with pytest.raises(FileNotFoundError, match="trainval.*LabelMap"):
    layout.find_layout(tmp_path, require_context=True)


# ----------------------------------------------------------------------------------------------
# Targets (need jhseg.hierarchy.filter_small_regions).

def test_hierarchical_target_hand_built():
  from tfds_builders.ultrametric_pascal_part import targets
  ucm, instances, parts = targets.hierarchical_target(TINY_INSTANCES, TINY_PARTS, min_area=1)
  assert ucm.shape == (11, 15) and ucm.dtype == np.float32
  check_interpixel_layout(ucm)
  h, v = split_interpixel(ucm)
  np.testing.assert_array_equal(h, TINY_H)
  np.testing.assert_array_equal(v, TINY_V)
  np.testing.assert_array_equal(instances, TINY_INSTANCES)
  np.testing.assert_array_equal(parts, TINY_PARTS)


def test_hierarchical_target_removes_small_part():
  """With min_area 3 the 2-px `leye` merges into `head`: its frontier drops to 0."""
  from tfds_builders.ultrametric_pascal_part import targets
  ucm, instances, parts = targets.hierarchical_target(TINY_INSTANCES, TINY_PARTS, min_area=3)
  expected_h, expected_v = TINY_H.copy(), TINY_V.copy()
  expected_h[1, [0, 2]] = 0
  expected_v[0:2, 1:3] = 0
  h, v = split_interpixel(ucm)
  np.testing.assert_array_equal(h, expected_h)
  np.testing.assert_array_equal(v, expected_v)
  np.testing.assert_array_equal(parts, np.where(TINY_PARTS == 1, 2, TINY_PARTS))
  np.testing.assert_array_equal(instances, TINY_INSTANCES)


# A 10x12 PASCAL-Context label map: two halves (56 and 60 px) and a 4-px blob to be removed.
CONTEXT_SHAPE = (10, 12)
CONTEXT_LABELS = np.where(np.arange(12)[None, :] < 6, 5, 7) * np.ones((10, 1), int)
CONTEXT_LABELS[2:4, 1:3] = 459


def test_binary_label_target_hand_built():
  from tfds_builders.ultrametric_pascal_part import targets
  ucm = targets.binary_label_target(CONTEXT_LABELS)
  check_interpixel_layout(ucm)
  h, v = split_interpixel(ucm)
  expected_h = np.zeros((10, 11), np.float32)
  expected_h[:, 5] = 1  # the frontier between the halves; the blob's contour is gone
  np.testing.assert_array_equal(h, expected_h)
  np.testing.assert_array_equal(v, 0)


# ----------------------------------------------------------------------------------------------
# TFDS builds. The real sample is built once per module (about 30 s on one core).

def _build(manual_dir, data_dir, config):
  import tensorflow_datasets as tfds
  from tfds_builders.ultrametric_pascal_part import Builder
  builder = Builder(data_dir=str(data_dir), config=config, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _examples(builder):
  return {split: [builder.as_data_source(split=split)[i]
                  for i in range(builder.info.splits[split].num_examples)]
          for split in builder.info.splits}


@pytest.fixture(scope="module")
def sample_build(shared_data, tmp_path_factory):
  builder = _build(shared_data / SAMPLE, tmp_path_factory.mktemp("tfds"), "hierarchical")
  return builder, _examples(builder)


def _all(sample_build):
  return [ex for split_examples in sample_build[1].values() for ex in split_examples]


def _id(example):
  return example["image/id"].decode() if isinstance(example["image/id"], bytes) else example["image/id"]


def test_sample_build_splits_and_data_source(sample_build, shared_data):
  import tensorflow_datasets as tfds
  builder, examples = sample_build
  # The sample's 18 ids are VOC 2010 images: COB's lists (the paper's splits) place them.
  for split, ids in SAMPLE_COB_SPLITS.items():
    assert sorted(_id(e) for e in examples[split]) == ids
  assert builder.info.metadata["split_rule"].startswith("COB's PASCAL-Context splits")
  assert builder.info.metadata["min_region_area"] == 30
  # The registered name works with tfds.data_source, as jhseg.data uses it.
  source = tfds.data_source("ultrametric_pascal_part/hierarchical", split="test",
                            data_dir=builder.data_dir_root, download=False)
  assert len(source) == len(SAMPLE_COB_SPLITS["test"]) == 5


def test_sample_features_shapes_and_image(sample_build, shared_data):
  from PIL import Image
  for example in _all(sample_build):
    image = example["image"]
    height, width = image.shape[:2]
    assert image.dtype == np.uint8 and image.shape[2] == 3
    jpeg = np.asarray(Image.open(shared_data / SAMPLE / "JPEGImages" / f"{_id(example)}.jpg"))
    assert np.abs(image.astype(int) - jpeg.astype(int)).mean() < 2  # same picture
    assert example["ucm"].shape == (2 * height - 1, 2 * width - 1)
    assert example["ucm"].dtype == np.float32
    assert example["instances"].shape == example["parts"].shape == (height, width)
    assert example["instances"].dtype == example["parts"].dtype == np.int32


def test_sample_targets_are_ultrametric(sample_build):
  """3 levels; every 0.5 edge inside one object; cuts at 0.25 and 0.75 are closed partitions."""
  levels_seen = set()
  for example in _all(sample_build):
    ucm, instances, parts = example["ucm"], example["instances"], example["parts"]
    assert set(np.unique(ucm)) <= {0.0, 0.5, 1.0}
    levels_seen |= set(np.unique(ucm))
    check_interpixel_layout(ucm)
    for threshold in (0.25, 0.75):
      assert_closed_contours(ucm, threshold)
    fine, coarse = regions_below(ucm, 0.25), regions_below(ucm, 0.75)
    assert num_pairs(fine, coarse) == np.unique(fine).size  # the part cut refines the object cut
    for weights, (p_inst, q_inst), (p_part, q_part) in zip(
        split_interpixel(ucm), edge_pairs(instances), edge_pairs(parts)):
      assert np.all(p_inst[weights == 0.5] == q_inst[weights == 0.5])  # inside one object
      assert np.all(weights[p_inst != q_inst] == 1)  # instance boundaries at level 1
      assert np.all(weights[p_part != q_part] >= 0.5)  # part boundaries at least 0.5
    # The maps are constant on the regions of their level.
    for threshold, labels in ((0.75, instances), (0.25, parts)):
      regions = regions_below(ucm, threshold)
      assert num_pairs(regions, labels) == np.unique(regions).size
  assert levels_seen == {0.0, 0.5, 1.0}


def test_sample_no_region_under_30_pixels(sample_build):
  for example in _all(sample_build):
    for threshold in (0.25, 0.75):
      areas = np.bincount(regions_below(example["ucm"], threshold).ravel())[1:]
      assert areas.min() >= 30, (_id(example), threshold, areas.min())


def test_sample_parts_never_overlap_instances(sample_build):
  """Each part id lies inside one instance; background is background in both maps."""
  for example in _all(sample_build):
    parts, instances = example["parts"], example["instances"]
    assert num_pairs(parts, instances) == np.unique(parts).size, _id(example)
    np.testing.assert_array_equal(parts == 0, instances == 0)


def test_sample_instance_classes_match_annotation(sample_build, shared_data):
  for example in _all(sample_build):
    raw = raw_loadmat_objects(shared_data / SAMPLE / "Annotations_Part" / f"{_id(example)}.mat")
    np.testing.assert_array_equal(example["instance_classes"], [0] + [c for _, c, _ in raw])
    assert example["instances"].max() < len(example["instance_classes"])


def test_sample_filtering_only_relabels_small_regions(sample_build, shared_data):
  """Stored maps differ from the plain stacking only on regions smaller than 30 px."""
  changed_somewhere = False
  for example in _all(sample_build):
    path = shared_data / SAMPLE / "Annotations_Part" / f"{_id(example)}.mat"
    annotation = pascal_part_mat.read_annotation(path)
    stacked = stacking.stack(annotation, example["instances"].shape)
    for raw, stored in ((stacked.instances, example["instances"]), (stacked.parts, example["parts"])):
      changed = raw != stored
      changed_somewhere |= changed.any()
      # Connected components of each raw label (4-connectivity), with their areas.
      components = np.zeros(raw.shape, np.int64)
      offset = 0
      for label in np.unique(raw):
        pieces, count = scipy.ndimage.label(raw == label)
        components[pieces > 0] = pieces[pieces > 0] + offset
        offset += count
      areas = np.bincount(components.ravel())
      assert np.all(areas[components[changed]] < 30), _id(example)
  assert changed_somewhere  # the sample does contain regions under 30 px


def test_binary_parts_config_is_part_level_of_hierarchy(sample_build, shared_data, tmp_path):
  """BGM_UPP on two sample images: 1 exactly where the HGM target is >= 0.5."""
  manual = tmp_path / "manual"
  ids = ["2008_000652", "2010_005243"]  # one object with 18 parts; 11 overlapping objects
  for folder, suffix in (("Annotations_Part", ".mat"), ("JPEGImages", ".jpg")):
    (manual / folder).mkdir(parents=True)
    for image_id in ids:
      (manual / folder / f"{image_id}{suffix}").symlink_to(
          shared_data / SAMPLE / folder / f"{image_id}{suffix}")
  binary = _build(manual, tmp_path / "tfds", "binary_parts")
  hierarchical = {_id(e): e for e in _all(sample_build)}
  got = [e for split_examples in _examples(binary).values() for e in split_examples]
  assert sorted(_id(e) for e in got) == ids
  for example in got:
    reference = hierarchical[_id(example)]
    np.testing.assert_array_equal(example["ucm"], (reference["ucm"] >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(example["parts"], reference["parts"])


def _context_manual_dir(root, *, with_context=True, broken_id=None):
  """Three fixture images in the release layouts, with VOC-style split lists."""
  ids = ["2000_000001", "2000_000002", "2000_000003"]
  for folder in ("Annotations_Part", "JPEGImages", "trainval"):
    (root / folder).mkdir(parents=True)
  person = ("person", 15, _rect(CONTEXT_SHAPE, (0, 10), (0, 6)),
            [("head", _rect(CONTEXT_SHAPE, (0, 5), (0, 6)))])  # 30 + 30 px
  for n, image_id in enumerate(ids):
    write_pascal_part_mat(root / "Annotations_Part" / f"{image_id}.mat", image_id, [person])
    write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", CONTEXT_SHAPE, seed=n)
    if with_context:
      write_context_mat(root / "trainval" / f"{image_id}.mat", CONTEXT_LABELS)
  if broken_id:
    (root / "Annotations_Part" / f"{broken_id}.mat").write_bytes(b"not a mat file")
  _write_lines(root / "ImageSets/Main/train.txt", ids[:1])
  _write_lines(root / "ImageSets/Main/val.txt", ids[:0:-1])
  return ids


def test_binary_context_config_on_release_format_fixture(tmp_path):
  ids = _context_manual_dir(tmp_path / "manual")
  builder = _build(tmp_path / "manual", tmp_path / "tfds", "binary_context")
  examples = _examples(builder)
  # VOC lists: train as given; val halved (sorted): first half val, second half test.
  assert {s: [_id(e) for e in x] for s, x in examples.items()} == {
      "train": [ids[0]], "val": [ids[1]], "test": [ids[2]]}
  assert "PASCAL-Context" in builder.info.metadata["split_rule"]
  expected_h = np.zeros((10, 11), np.float32)
  expected_h[:, 5] = 1
  for example in [e for x in examples.values() for e in x]:
    h, v = split_interpixel(example["ucm"])
    np.testing.assert_array_equal(h, expected_h)
    np.testing.assert_array_equal(v, 0)
    # Pascal-Part maps are stored as in the other configs: the person and its head.
    np.testing.assert_array_equal(example["instances"], _rect(CONTEXT_SHAPE, (0, 10), (0, 6)))
    np.testing.assert_array_equal(example["instance_classes"], [0, 15])
    assert len(np.unique(example["parts"])) == 3  # background, head, remainder


def test_binary_context_without_context_release_fails_clearly(tmp_path):
  _context_manual_dir(tmp_path / "manual", with_context=False)
  with pytest.raises(FileNotFoundError, match="trainval.*PASCAL-Context trainval.tar.gz"):
    _build(tmp_path / "manual", tmp_path / "tfds", "binary_context")


def test_build_error_names_the_broken_file(tmp_path):
  _context_manual_dir(tmp_path / "manual", broken_id="2000_000002")
  with pytest.raises(pascal_part_mat.PascalPartFormatError) as error:
    _build(tmp_path / "manual", tmp_path / "tfds", "hierarchical")
  assert str(tmp_path / "manual" / "Annotations_Part" / "2000_000002.mat") in str(error.value)
