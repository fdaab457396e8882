"""The synthetic scenes: a consistent two-level hierarchy, deterministic, readable.

Reference computations here use NumPy/SciPy only (not `jhseg.grid`, which the
builder uses to make the `ucm` target), so the stored target is checked
against an independent construction.
"""
import os

import numpy as np
import pytest
import scipy.ndimage
import tensorflow_datasets as tfds

from tfds_builders import synthetic_scenes
from tfds_builders.synthetic_scenes import label_tree, render

SPLITS = {"train": 64, "validation": 16, "test": 16}
MAPS = ("instances", "parts", "object_class", "part_class")


@pytest.fixture(scope="module")
def sources(synthetic_data_dir):
  return {split: tfds.data_source("synthetic_scenes/tiny", split=split,
                                  data_dir=synthetic_data_dir) for split in SPLITS}


@pytest.fixture(scope="module")
def examples(sources):
  """Every stored example of every split of the tiny config."""
  return [s[i] for s in sources.values() for i in range(len(s))]


# ----------------------------------------------------------------------------- references


def boundaries(labels):
  """Boolean (h (H, W-1), v (H-1, W)): True where 4-neighbours have different labels."""
  return labels[:, 1:] != labels[:, :-1], labels[1:, :] != labels[:-1, :]


def reference_ucm(parts, instances):
  """Interpixel (2H-1, 2W-1) map built by hand from the architecture contract."""
  (ph, pv), (oh, ov) = boundaries(parts), boundaries(instances)
  h = np.where(oh, 1.0, np.where(ph, 0.5, 0.0))
  v = np.where(ov, 1.0, np.where(pv, 0.5, 0.0))
  height, width = parts.shape
  out = np.zeros((2 * height - 1, 2 * width - 1), np.float32)
  out[0::2, 1::2] = h
  out[1::2, 0::2] = v
  for i in range(height - 1):
    for j in range(width - 1):
      out[2 * i + 1, 2 * j + 1] = max(h[i, j], h[i + 1, j], v[i, j], v[i, j + 1])
  return out


def label_components(labels):
  """4-connected components of each label value (an occluder may split a label in two)."""
  out = np.zeros(labels.shape, np.int64)
  for value in np.unique(labels):
    pieces, _ = scipy.ndimage.label(labels == value)
    out[pieces > 0] = pieces[pieces > 0] + out.max()
  return out


def ucm_cut(ucm, threshold):
  """Pixel partition of the UCM at `threshold`: pixels joined by edges of value <= threshold.

  In the interpixel grid a pixel (2i, 2j) reaches its neighbour (2i, 2j+2) through the edge
  cell (2i, 2j+1); 4-connected components of {cells <= threshold} are thus the regions.
  """
  regions, _ = scipy.ndimage.label(ucm <= threshold)
  return regions[0::2, 0::2]


def same_partition(a, b):
  """True iff label maps a and b define the same partition (up to renaming)."""
  pairs = set(zip(a.ravel().tolist(), b.ravel().tolist()))
  return len(pairs) == len(np.unique(a)) == len(np.unique(b))


# ----------------------------------------------------------------------------- dataset


def test_splits_features_and_label_tree_metadata(synthetic_data_dir, examples):
  builder = tfds.builder("synthetic_scenes/tiny", data_dir=synthetic_data_dir)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == SPLITS
  assert builder.info.file_format.value == "array_record"
  assert builder.info.metadata["part_to_object"] == label_tree.PART_TO_OBJECT.tolist()
  assert builder.info.metadata["part_classes"] == list(label_tree.PART_CLASSES)
  assert builder.info.features["label"].names == list(label_tree.OBJECT_CLASSES)
  e = examples[0]
  assert e["image"].dtype == np.uint8 and e["image"].shape == (32, 32, 3)
  for name in MAPS:
    assert e[name].dtype == np.int32 and e[name].shape == (32, 32), name
  assert e["ucm"].dtype == np.float32 and e["ucm"].shape == (63, 63)


def test_random_access_returns_scene_i_of_the_split(sources):
  for split, seed in synthetic_scenes.SPLIT_SEEDS.items():
    source = sources[split]
    for i in (len(source) - 1, 0, 3, 1):  # out of order on purpose
      stored, scene = source[i], render.render_scene(i, image_size=32, max_objects=3, seed=seed)
      for name in ("image",) + MAPS:
        np.testing.assert_array_equal(stored[name], getattr(scene, name), err_msg=name)
      assert stored["label"] == scene.label


def test_two_builds_are_identical(sources, tmp_path):
  rebuilt = synthetic_scenes.ensure_built("tiny", str(tmp_path))
  for split in SPLITS:
    again = rebuilt.as_data_source(split=split)
    assert len(again) == len(sources[split])
    for i in range(len(again)):
      a, b = sources[split][i], again[i]
      assert sorted(a) == sorted(b)
      for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{split}[{i}] {name}")


def test_ensure_built_reuses_prepared_data_and_names_bad_configs(tmp_path):
  builder = synthetic_scenes.ensure_built("tiny", str(tmp_path))
  files = {f: os.stat(os.path.join(builder.data_dir, f)).st_mtime_ns
           for f in os.listdir(builder.data_dir)}
  again = synthetic_scenes.ensure_built("tiny", str(tmp_path))
  assert again.is_prepared()
  assert {f: os.stat(os.path.join(again.data_dir, f)).st_mtime_ns
          for f in os.listdir(again.data_dir)} == files
  with pytest.raises(ValueError, match="unknown config 'huge'; valid configs: default, tiny"):
    synthetic_scenes.ensure_built("huge", str(tmp_path))


def test_bad_config_fields_are_named():
  with pytest.raises(ValueError, match="config 'small': field image_size must be >= 8, got 4"):
    synthetic_scenes.SyntheticScenesConfig(name="small", image_size=4)
  with pytest.raises(ValueError, match="field num_test must be >= 0, got -1"):
    synthetic_scenes.SyntheticScenesConfig(name="small", num_test=-1)


# ----------------------------------------------------------------------------- hierarchy


def test_every_part_lies_inside_exactly_one_object(examples):
  for e in examples:
    for part in np.unique(e["parts"]):
      owners = np.unique(e["instances"][e["parts"] == part])
      assert len(owners) == 1
      assert (owners[0] == 0) == (part == 0)  # background is one part and one object


def test_ids_are_consecutive_and_scenes_are_not_trivial(examples):
  for e in examples:
    for name in ("instances", "parts"):
      ids = np.unique(e[name])
      np.testing.assert_array_equal(ids[ids > 0], np.arange(1, ids.max() + 1), err_msg=name)
  objects = np.array([e["instances"].max() for e in examples])
  assert objects.min() >= 1 and (objects >= 2).mean() > 0.3
  assert all(e["parts"].max() > e["instances"].max() for e in examples)  # objects have parts


def test_label_tree_maps_part_classes_to_object_classes(examples):
  for e in examples:
    np.testing.assert_array_equal(label_tree.PART_TO_OBJECT[e["part_class"]], e["object_class"])
    np.testing.assert_array_equal(e["part_class"] == 0, e["parts"] == 0)
    # The image label is the class of the largest object.
    areas = np.bincount(e["instances"].ravel())[1:]
    largest = 1 + int(np.argmax(areas))
    assert e["label"] == e["object_class"][e["instances"] == largest][0] != 0


def test_ucm_equals_the_hand_built_three_level_target(examples):
  for e in examples:
    assert set(np.unique(e["ucm"]).tolist()) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(e["ucm"], reference_ucm(e["parts"], e["instances"]))


def test_ucm_levels_are_the_object_and_part_boundaries(examples):
  saw_part_edges = False
  for e in examples:
    ucm = e["ucm"]
    h, v = ucm[0::2, 1::2], ucm[1::2, 0::2]
    (oh, ov), (ph, pv) = boundaries(e["instances"]), boundaries(e["parts"])
    # Object boundaries (incl. object/background) are the level-1 edges.
    np.testing.assert_array_equal(h == 1.0, oh)
    np.testing.assert_array_equal(v == 1.0, ov)
    # Part boundaries inside an object are exactly at 0.5; object boundaries are part boundaries.
    np.testing.assert_array_equal(h == 0.5, ph & ~oh)
    np.testing.assert_array_equal(v == 0.5, pv & ~ov)
    assert not np.any(oh & ~ph) and not np.any(ov & ~pv)
    saw_part_edges |= bool(np.any(h == 0.5) or np.any(v == 0.5))
  assert saw_part_edges


def test_thresholds_give_the_part_and_object_partitions(examples):
  for e in examples:
    fine, coarse = ucm_cut(e["ucm"], 0.25), ucm_cut(e["ucm"], 0.75)
    assert same_partition(fine, label_components(e["parts"]))
    assert same_partition(coarse, label_components(e["instances"]))
    assert same_partition(ucm_cut(e["ucm"], 1.0), np.zeros_like(fine))  # the root
    # Nesting: each fine region lies inside one coarse region.
    assert len(set(zip(fine.ravel().tolist(), coarse.ravel().tolist()))) == len(np.unique(fine))


# ----------------------------------------------------------------------------- renderer


def test_shape_masks_by_hand():
  u = np.array([0.0, 1.0, 1.5, 0.0, -1.0, 0.5])
  v = np.array([0.0, 1.0, 1.0, 2.0, 1.5, 0.5])
  # Apex (0, 0), base v = 2 of half width 2: |u| <= v inside, the base row excluded.
  np.testing.assert_array_equal(render.Triangle(0.0, 2.0, 2.0).mask(u, v),
                                [True, True, False, False, True, True])
  np.testing.assert_array_equal(render.Rect(0.0, 1.0, 0.0, 1.0).mask(u, v),
                                [True, False, False, False, False, True])
  # Unit disc at (0, 1): (-1, 1.5) is at squared distance 1.25, outside; (0, 0) on the rim.
  np.testing.assert_array_equal(render.Ellipse(0.0, 1.0, 1.0, 1.0).mask(u, v),
                                [True, True, False, True, False, True])


def test_painters_order_nearer_objects_occlude_farther_ones():
  size = 32
  y, x = np.mgrid[:size, :size] + 0.5
  far = render.Placement("figure", centre=(16.0, 14.0), height=20.0)
  near = render.Placement("house", centre=(18.0, 18.0), height=14.0)
  scene = render.paint([far, near], image_size=size, rng=np.random.default_rng(0))
  near_parts, far_parts = near.part_masks(y, x), far.part_masks(y, x)
  near_mask = np.logical_or.reduce([m for _, m in near_parts])
  far_mask = np.logical_or.reduce([m for _, m in far_parts])
  assert np.any(far_mask & near_mask)  # the scene really has an occlusion
  np.testing.assert_array_equal(scene.instances == 2, near_mask)
  np.testing.assert_array_equal(scene.instances == 1, far_mask & ~near_mask)
  np.testing.assert_array_equal(scene.object_class[near_mask],
                                label_tree.object_class_id("house"))
  # Within the house, the door is drawn over the wall.
  (_, wall), (_, roof), (_, door) = near_parts
  np.testing.assert_array_equal(scene.part_class == label_tree.part_class_id("house/door"), door)
  np.testing.assert_array_equal(scene.part_class == label_tree.part_class_id("house/wall"),
                                wall & ~door & ~roof)
  # The largest visible object gives the label.
  expected = "figure" if (far_mask & ~near_mask).sum() > near_mask.sum() else "house"
  assert scene.label == label_tree.object_class_id(expected)


def test_parts_differ_in_colour_across_part_boundaries():
  # Mean colours of adjacent parts differ clearly, so the hierarchy is visible in the image.
  scene = render.render_scene(0, image_size=64, max_objects=4, seed=0)
  image = scene.image.astype(float)
  means = {p: image[scene.parts == p].mean(axis=0) for p in np.unique(scene.parts)}
  ph, pv = boundaries(scene.parts)
  pairs = {(a, b) for a, b in zip(scene.parts[:, :-1][ph], scene.parts[:, 1:][ph])}
  pairs |= {(a, b) for a, b in zip(scene.parts[:-1][pv], scene.parts[1:][pv])}
  assert pairs
  for a, b in pairs:
    assert np.abs(means[a] - means[b]).max() > 10, (a, b)


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
  with pytest.raises(ValueError, match="max_objects must be >= 1"):
    render.render_scene(0, image_size=16, max_objects=0)
  with pytest.raises(KeyError, match="unknown object class 'boat'; valid classes: figure"):
    render.Placement("boat", centre=(4.0, 4.0), height=4.0).part_masks(np.zeros(1), np.zeros(1))


def test_preview_grid_layout():
  from tfds_builders.synthetic_scenes import preview

  colours = preview.label_colours(np.arange(21))
  np.testing.assert_array_equal(colours[0], [0, 0, 0])
  assert len({tuple(c) for c in colours[1:]}) == 20
  scenes = [render.render_scene(i, image_size=16, max_objects=2) for i in range(3)]
  ucms = [reference_ucm(s.parts, s.instances) for s in scenes]
  grid = preview.sample_grid(scenes, ucms)
  # 3 rows of 32 px with 2-px gaps; 4 panels of 32 px with 2-px gaps.
  assert grid.shape == (3 * 32 + 2 * 2, 4 * 32 + 3 * 2, 3) and grid.dtype == np.uint8
  np.testing.assert_array_equal(grid[34:34 + 32:2, :32:2], scenes[1].image)  # row 1, image panel
  np.testing.assert_array_equal(grid[34:34 + 31, 3 * 34:3 * 34 + 31, 0],
                                np.round(ucms[1] * 255))  # 0.5 -> 128
