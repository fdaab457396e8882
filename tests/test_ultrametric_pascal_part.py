"""Tests of the Ultrametric Pascal-Part builder: reading, stacking, splits, targets, TFDS build.

Real-data tests use the 18 original Pascal-Part annotations of ../shared/data (skipped when
absent); format tests use fixtures written in the release format (MATLAB structs via
scipy.io.savemat, the same layout `loadmat` returns for the real files).
"""
from __future__ import annotations

import collections
import pathlib

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
