"""jhseg.label_tree: structure, label mapping (NumPy and jit), checks, conversions."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg import label_tree
from jhseg.metrics import semantic
from tfds_builders.synthetic_scenes import label_tree as synthetic_tree

# parts: 0 bg, 1 cat/head, 2 cat/body, 3 car/wheel, 4 car/body; objects: bg, cat, car;
# groups: nothing, animal, vehicle... kept two-level except in the three-level test.
PARTS = ("bg", "cat/head", "cat/body", "car/wheel", "car/body")
OBJECTS = ("bg", "cat", "car")
PARENT = (0, 1, 1, 2, 2)


@pytest.fixture(name="tree")
def two_level_tree():
  return label_tree.LabelTree.two_level(PARTS, OBJECTS, PARENT)


def test_structure(tree):
  assert tree.num_levels == 2
  assert tree.num_classes("part") == 5 and tree.num_classes(1) == 3
  assert tree.class_id("car/wheel") == 3 and tree.class_id("car", "object") == 2
  np.testing.assert_array_equal(tree.fine_to_level(0), np.arange(5))
  np.testing.assert_array_equal(tree.fine_to_level("object"), PARENT)
  np.testing.assert_array_equal(tree.children(1), [1, 2])
  np.testing.assert_array_equal(tree.children(2, "object"), [3, 4])


def test_three_levels_compose_parents():
  tree = label_tree.LabelTree(("part", "object", "group"),
                              (PARTS, OBJECTS, ("nothing", "thing")),
                              (PARENT, (0, 1, 1)))
  np.testing.assert_array_equal(tree.fine_to_level("group"), [0, 1, 1, 1, 1])
  metrics_tree = tree.to_metrics_tree()
  assert isinstance(metrics_tree, semantic.LabelTree)
  assert metrics_tree.num_levels == 3
  np.testing.assert_array_equal(metrics_tree.leaf_to_level[2], [0, 1, 1, 1, 1])


def test_map_labels_numpy_and_jit_keep_ignore(tree):
  labels = np.array([[0, 1, 2], [3, 4, 255], [7, -1, 1]], np.int32)
  expected = np.array([[0, 1, 1], [2, 2, 255], [255, 255, 1]], np.int32)
  mapped = tree.map_labels(labels, "object")
  assert isinstance(mapped, np.ndarray)
  np.testing.assert_array_equal(mapped, expected)
  jitted = jax.jit(lambda x: tree.map_labels(x, 1))(jnp.asarray(labels))
  np.testing.assert_array_equal(np.asarray(jitted), expected)
  np.testing.assert_array_equal(tree.map_labels(labels, 0)[0], [0, 1, 2])


def test_check_labels_and_consistency(tree):
  tree.check_labels(np.array([0, 4, 255]), source="x.png")
  with pytest.raises(ValueError, match=r"x\.png: part labels .*found 5, 9"):
    tree.check_labels(np.array([0, 5, 9, 255]), source="x.png")
  parts = np.array([1, 3, 255, 0])
  tree.check_consistent(parts, np.array([1, 2, 2, 0]), source="img1")  # ignore: any
  with pytest.raises(ValueError, match=r"img1: 1 pixels .*car/wheel under cat"):
    tree.check_consistent(parts, np.array([1, 1, 2, 0]), source="img1")
  with pytest.raises(ValueError, match="shape"):
    tree.check_consistent(parts, np.zeros(3, int))


@pytest.mark.parametrize("kwargs, message", [
    (dict(parent=(0, 1, 1, 2)), r"has 4 entries, expected one per part class \(5\)"),
    (dict(parent=(0, 1, 1, 3, 2)), r"maps classes car/wheel to 3, outside"),
    (dict(parent=(0, 1, 1, 1, 1)), r"object classes car have no part class"),
    (dict(coarse_names=("bg", "cat", "cat")), r"repeats the class names \['cat'\]"),
    (dict(ignore_label=3), r"ignore_label=3 collides"),
])
def test_invalid_trees_are_refused(kwargs, message):
  options = dict(fine_names=PARTS, coarse_names=OBJECTS, parent=PARENT)
  options.update(kwargs)
  with pytest.raises(ValueError, match=message):
    label_tree.LabelTree.two_level(**options)


def test_errors_list_valid_names(tree):
  with pytest.raises(KeyError, match="valid names: bg, cat, car"):
    tree.class_id("dog", "object")
  with pytest.raises(ValueError, match=r"valid levels: \['part', 'object'\]"):
    tree.num_classes("scene")
  with pytest.raises(ValueError, match="missing"):
    label_tree.LabelTree.from_metadata({"level_names": ["a", "b"]})


def test_metadata_round_trip_through_json(tree):
  text = json.dumps(tree.to_metadata())
  assert label_tree.LabelTree.from_metadata(json.loads(text)) == tree


def test_synthetic_scenes_tree_matches_the_builder_tables():
  tree = label_tree.synthetic_scenes_tree()
  assert tree.class_names == (synthetic_tree.PART_CLASSES, synthetic_tree.OBJECT_CLASSES)
  np.testing.assert_array_equal(tree.fine_to_level(1), synthetic_tree.PART_TO_OBJECT)
  # Part names "<object>/<part>" name their parent.
  for part, name in enumerate(synthetic_tree.PART_CLASSES):
    parent = tree.class_names[1][tree.fine_to_level(1)[part]]
    assert name.split("/")[0] == parent
