"""The synthetic scenes: a consistent two-level hierarchy, deterministic, readable."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jhseg import grid
from tfds_builders.synthetic_scenes import label_tree, render


@pytest.fixture(scope="module")
def examples(synthetic_data_dir):
  source = tfds.data_source("synthetic_scenes/tiny", split="train", data_dir=synthetic_data_dir)
  return [source[i] for i in range(len(source))]


def components(labels, boundaries_h, boundaries_v):
  """Connected components of pixels linked by non-boundary 4-adjacency edges."""
  h, w = labels.shape
  parent = np.arange(h * w)

  def find(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for (di, dj), cut in (((0, 1), boundaries_h), ((1, 0), boundaries_v)):
    for i, j in zip(*np.nonzero(~cut)):
      a, b = find(i * w + j), find((i + di) * w + j + dj)
      parent[a] = b
  return np.array([find(i) for i in range(h * w)]).reshape(h, w)


def same_partition(a, b):
  pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
  return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_split_sizes_and_fields(synthetic_data_dir):
  builder = tfds.builder("synthetic_scenes/tiny", data_dir=synthetic_data_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      "train": 64, "validation": 16, "test": 16}


def test_every_part_lies_inside_exactly_one_object(examples):
  for e in examples:
    for part in np.unique(e["parts"]):
      owners = np.unique(e["instances"][e["parts"] == part])
      assert len(owners) == 1
      assert (owners[0] == 0) == (part == 0)


def test_label_tree_maps_part_classes_to_object_classes(examples):
  for e in examples:
    np.testing.assert_array_equal(label_tree.PART_TO_OBJECT[e["part_class"]], e["object_class"])
    assert e["label"] in np.unique(e["object_class"]) and e["label"] != 0


def test_ucm_levels_are_the_part_and_object_boundaries(examples):
  for e in examples:
    h, v = (np.asarray(x) for x in grid.interpixel_to_edges(e["ucm"]))
    assert set(np.unique(e["ucm"])) <= {0.0, 0.5, 1.0}
    object_h, object_v = (np.asarray(x) for x in grid.boundary_edges(e["instances"]))
    part_h, part_v = (np.asarray(x) for x in grid.boundary_edges(e["parts"]))
    # Object boundaries are exactly the level-1 edges; part boundaries inside objects are 0.5.
    np.testing.assert_array_equal(h == 1.0, object_h)
    np.testing.assert_array_equal(v == 1.0, object_v)
    np.testing.assert_array_equal(h == 0.5, part_h & ~object_h)
    np.testing.assert_array_equal(v == 0.5, part_v & ~object_v)


def test_thresholds_give_the_part_and_object_partitions(examples):
  e = examples[0]
  h, v = (np.asarray(x) for x in grid.interpixel_to_edges(e["ucm"]))
  fine, coarse = components(e["parts"], h > 0.25, v > 0.25), components(e["parts"], h > 0.75,
                                                                          v > 0.75)
  # Regions are connected pieces of the label maps (an occluder may split a part).
  assert same_partition(fine, components(e["parts"], *grid.boundary_edges(e["parts"])))
  assert same_partition(coarse, components(e["instances"], *grid.boundary_edges(e["instances"])))
  assert grid.is_nested(fine, coarse)


def test_rendering_is_deterministic_and_depends_on_the_seed():
  a = render.render_scene(5, image_size=32, max_objects=3, seed=0)
  b = render.render_scene(5, image_size=32, max_objects=3, seed=0)
  c = render.render_scene(5, image_size=32, max_objects=3, seed=1)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.image, c.image)


def test_bad_render_arguments_are_reported():
  with pytest.raises(ValueError, match="image_size must be >= 8"):
    render.render_scene(0, image_size=4, max_objects=2)
