"""Tests for jhseg.metrics.level_recovery (LRF/FDF, eqs. 3-4 of Lapertot et al.)."""
import numpy as np
import pytest

from jhseg.metrics import level_recovery as lr


def _ultrametric(label_maps, altitudes):
  """Edge weights of nested label maps (fine to coarse): max altitude where labels differ."""
  h = np.zeros((label_maps[0].shape[0], label_maps[0].shape[1] - 1))
  v = np.zeros((label_maps[0].shape[0] - 1, label_maps[0].shape[1]))
  for labels, altitude in zip(label_maps, altitudes):
    h = np.maximum(h, altitude * (labels[:, 1:] != labels[:, :-1]))
    v = np.maximum(v, altitude * (labels[1:, :] != labels[:-1, :]))
  return h, v


def _two_part_object():
  """4x6 image: object = columns 0-3 with parts {0,1} and {2,3}; background 4-5."""
  parts = np.tile(np.array([1, 1, 2, 2, 0, 0]), (4, 1))
  objects = np.tile(np.array([1, 1, 1, 1, 0, 0]), (4, 1))
  truth_h, truth_v = _ultrametric([parts, objects], [0.5, 1.0])
  pred_h = np.tile(np.array([0.0, 0.3, 0.0, 0.8, 0.6]), (4, 1))
  pred_v = np.zeros((3, 6))
  return objects, truth_h, truth_v, pred_h, pred_v


def test_hand_computed_whole_image():
  _, truth_h, truth_v, pred_h, pred_v = _two_part_object()
  counts = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                    thresholds=[0.2, 0.5, 0.7, 0.9], levels=[0.5, 1.0])
  np.testing.assert_array_equal(counts.truth, [4, 4])
  np.testing.assert_array_equal(counts.predicted, [12, 8, 4, 0])
  np.testing.assert_array_equal(counts.false, [4, 4, 0, 0])
  np.testing.assert_allclose(counts.level_recovery_fraction(),
                             [[1, 0, 0, 0], [1, 1, 1, 0]])
  np.testing.assert_allclose(counts.false_discovery_fraction(), [1 / 3, 1 / 2, 0, 0])


def test_hand_computed_object_neighbourhood_drops_far_contour():
  objects, truth_h, truth_v, pred_h, pred_v = _two_part_object()
  # Radius 1: column 4 is in the neighbourhood, column 5 is not, so the
  # spurious contour between columns 4 and 5 is dropped.
  neighbourhood = lr.object_neighbourhood(objects, radius=1)
  np.testing.assert_array_equal(neighbourhood[0], [1, 1, 1, 1, 1, 0])
  counts = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                    thresholds=[0.2, 0.5], neighbourhood=neighbourhood)
  np.testing.assert_array_equal(counts.predicted, [8, 4])
  np.testing.assert_array_equal(counts.false, [0, 0])
  np.testing.assert_allclose(counts.level_recovery_fraction(), [[1, 0], [1, 1]])


def test_clipped_open_contour_is_dropped_closed_one_kept():
  objects = np.zeros((6, 8), int)
  objects[:2, :2] = 1
  neighbourhood = lr.object_neighbourhood(objects, radius=2)
  # A vertical line between columns 2 and 3 over all rows: closed in the image,
  # but only its rows 0-1 are inside the neighbourhood, where it is open.
  line_h = np.zeros((6, 7), bool)
  line_h[:, 2] = True
  line_v = np.zeros((5, 8), bool)
  inside_h, _ = lr.edges_within(neighbourhood)
  assert inside_h[:, 2].tolist() == [True, True, False, False, False, False]
  kept_h, kept_v = lr.contours_in_neighbourhood(line_h, line_v, neighbourhood)
  assert not kept_h.any() and not kept_v.any()
  # The object's own boundary (closed with the image border) is kept whole.
  box_h = np.zeros((6, 7), bool)
  box_h[:2, 1] = True
  box_v = np.zeros((5, 8), bool)
  box_v[1, :2] = True
  kept_h, kept_v = lr.contours_in_neighbourhood(box_h | line_h, box_v, neighbourhood)
  np.testing.assert_array_equal(kept_h, box_h)
  np.testing.assert_array_equal(kept_v, box_v)


def test_closed_contours_drops_dangling_piece():
  contour_h = np.zeros((3, 3), bool)
  contour_v = np.zeros((2, 4), bool)
  contour_h[0, 1] = True  # one edge sticking in from the top border: dangling
  kept_h, kept_v = lr.closed_contours(contour_h, contour_v)
  assert not kept_h.any()
  contour_h[:, 1] = True  # the full column splits the image: closed
  kept_h, _ = lr.closed_contours(contour_h, contour_v)
  np.testing.assert_array_equal(kept_h, contour_h)


def test_ground_truth_against_itself():
  rng = np.random.default_rng(0)
  objects = np.zeros((12, 14), int)
  objects[2:7, 2:8] = 1
  objects[8:11, 5:13] = 2
  parts = objects * 10 + (rng.random((12, 14)) > 0.5) * (objects > 0)
  truth_h, truth_v = _ultrametric([parts, objects], [0.5, 1.0])
  thresholds = lr.default_thresholds(9)
  for neighbourhood in (None, lr.object_neighbourhood(objects, radius=2)):
    counts = lr.level_recovery_counts(truth_h, truth_v, truth_h, truth_v,
                                      thresholds=thresholds, neighbourhood=neighbourhood)
    np.testing.assert_array_equal(counts.false_discovery_fraction(), 0)
    lrf = counts.level_recovery_fraction()
    np.testing.assert_array_equal(lrf[0], (thresholds < 0.5).astype(float))
    np.testing.assert_array_equal(lrf[1], np.ones_like(thresholds))
    assert counts.truth.min() > 0


def test_lrf_non_increasing_in_threshold_for_any_weights():
  rng = np.random.default_rng(1)
  objects = np.zeros((16, 16), int)
  objects[3:9, 4:12] = 1
  parts = objects * (1 + (np.arange(16)[None, :] > 7))
  truth_h, truth_v = _ultrametric([parts, objects], [0.5, 1.0])
  pred_h, pred_v = rng.random((16, 15)), rng.random((15, 16))
  counts = lr.level_recovery_counts(
      pred_h, pred_v, truth_h, truth_v, thresholds=lr.default_thresholds(19),
      neighbourhood=lr.object_neighbourhood(objects, radius=3))
  lrf = counts.level_recovery_fraction()
  assert np.all(np.diff(lrf, axis=1) <= 0)
  assert np.all(np.diff(counts.predicted) <= 0)


def test_tolerance_recovers_one_pixel_shift():
  objects = np.tile(np.array([1, 1, 1, 1, 0, 0]), (4, 1))
  truth_h, truth_v = _ultrametric([objects], [1.0])
  pred_h = np.zeros((4, 5))
  pred_h[:, 4] = 1.0  # boundary one pixel to the right of the truth (column 3|4)
  pred_v = np.zeros((3, 6))
  exact = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                   thresholds=[0.5], levels=[1.0])
  assert exact.level_recovery_fraction()[0, 0] == 0
  assert exact.false_discovery_fraction()[0] == 1
  slack = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                   thresholds=[0.5], levels=[1.0], tolerance=1.0)
  assert slack.level_recovery_fraction()[0, 0] == 1
  assert slack.false_discovery_fraction()[0] == 0
  too_tight = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                       thresholds=[0.5], levels=[1.0], tolerance=0.9)
  assert too_tight.level_recovery_fraction()[0, 0] == 0


def test_accumulator_pools_counts_and_per_class_crops():
  objects = np.zeros((30, 60), int)
  objects[5:12, 5:15] = 1   # class 7
  objects[15:25, 40:55] = 2  # class 3
  truth_h, truth_v = _ultrametric([objects], [1.0])
  pred_h, pred_v = truth_h.copy(), truth_v.copy()
  pred_h[5:12, 4] = 0.0  # lose the left side of instance 1
  acc = lr.LevelRecoveryAccumulator(levels=[1.0], thresholds=[0.5], radius=2)
  acc.add(pred_h, pred_v, truth_h, truth_v, instances=objects,
          instance_classes={1: 7, 2: 3})
  result = acc.result()
  # Instance 1 has perimeter 2*(7+10)=34 edges, instance 2 has 50. Losing the
  # left side opens instance 1's contour: its other 27 edges are dangling and
  # dropped too (non-closed), so only instance 2's 50 edges are recovered.
  assert result["lrf"][0, 0] == pytest.approx(50 / 84)
  assert result["fdf"][0] == 0.0
  assert result["per_class"][3]["lrf"][0, 0] == 1.0
  assert result["per_class"][7]["lrf"][0, 0] == 0.0
  assert result["per_class"][7]["num_instances"] == 1
  # Per-class crop equals the counts of the hand-made crop.
  rows, cols = slice(3, 14), slice(3, 17)
  crop_counts = lr.level_recovery_counts(
      pred_h[rows, 3:16], pred_v[3:13, cols], truth_h[rows, 3:16], truth_v[3:13, cols],
      thresholds=[0.5], levels=[1.0],
      neighbourhood=lr.object_neighbourhood(objects[rows, cols], radius=2))
  np.testing.assert_allclose(result["per_class"][7]["lrf"],
                             crop_counts.level_recovery_fraction())


def test_merge_equals_single_pass():
  rng = np.random.default_rng(2)
  images = []
  for _ in range(3):
    objects = np.zeros((10, 10), int)
    objects[2:6, 3:8] = 1
    truth_h, truth_v = _ultrametric([objects], [1.0])
    images.append((rng.random((10, 9)), rng.random((9, 10)), truth_h, truth_v, objects))
  whole = lr.LevelRecoveryAccumulator(levels=[1.0], thresholds=[0.3, 0.6])
  first = lr.LevelRecoveryAccumulator(levels=[1.0], thresholds=[0.3, 0.6])
  second = lr.LevelRecoveryAccumulator(levels=[1.0], thresholds=[0.3, 0.6])
  for i, (ph, pv, th, tv, objects) in enumerate(images):
    whole.add(ph, pv, th, tv, instances=objects, instance_classes={1: 0})
    (first if i == 0 else second).add(ph, pv, th, tv, instances=objects,
                                      instance_classes={1: 0})
  first.merge(second)
  np.testing.assert_array_equal(first.result()["lrf"], whole.result()["lrf"])
  np.testing.assert_array_equal(first.result()["fdf"], whole.result()["fdf"])
  assert first.result()["per_class"][0]["num_instances"] == 3
  with pytest.raises(ValueError, match="must match"):
    first.merge(lr.LevelRecoveryAccumulator(levels=[1.0], thresholds=[0.5]))


def test_failure_modes():
  h, v = np.zeros((4, 5)), np.zeros((3, 6))
  with pytest.raises(ValueError, match="predicted edges are for a 3x6 image"):
    lr.level_recovery_counts(np.zeros((3, 5)), np.zeros((2, 6)), h, v, thresholds=[0.5])
  with pytest.raises(ValueError, match="do not describe one H x W image"):
    lr.level_recovery_counts(h, v, np.zeros((4, 5)), np.zeros((4, 6)), thresholds=[0.5])
  with pytest.raises(ValueError, match="neighbourhood has shape"):
    lr.level_recovery_counts(h, v, h, v, thresholds=[0.5], neighbourhood=np.ones((3, 3)))
  with pytest.raises(ValueError, match="tolerance"):
    lr.level_recovery_counts(h, v, h, v, thresholds=[0.5], tolerance=-1)
  acc = lr.LevelRecoveryAccumulator()
  objects = np.zeros((4, 6), int)
  objects[1, 1] = 2
  with pytest.raises(ValueError, match="instance 2 is in the instance map"):
    acc.add(h, v, h, v, instances=objects, instance_classes={1: 0})
  with pytest.raises(ValueError, match="needs instances"):
    acc.add(h, v, h, v, instance_classes={1: 0})
  with pytest.raises(ValueError, match="instance ids must be integers >= 1"):
    list(lr.instance_crops(np.full((3, 3), 0), background=255))


def _same_partition(a, b):
  """Two label maps describe the same partition (a bijection between their ids)."""
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
  return (len(pairs[0]) == len(np.unique(a)) == len(np.unique(b)))


def test_contour_regions_equals_hierarchy_cut_at_threshold():
  from jhseg import hierarchy
  rng = np.random.default_rng(5)
  pred_h, pred_v = rng.random((7, 8)), rng.random((6, 9))
  for threshold in (0.2, 0.5, 0.8):
    ours = lr.contour_regions(pred_h > threshold, pred_v > threshold)
    assert _same_partition(ours, np.asarray(hierarchy.cut_at_threshold(pred_h, pred_v,
                                                                       threshold)))


def test_sweep_shares_cuts_but_equals_one_threshold_at_a_time():
  rng = np.random.default_rng(6)
  objects = np.zeros((12, 12), int)
  objects[2:8, 3:10] = 1
  truth_h, truth_v = _ultrametric([objects], [1.0])
  # Weights on a coarse grid, so many thresholds select the same contours.
  pred_h, pred_v = rng.integers(0, 5, (12, 11)) / 4, rng.integers(0, 5, (11, 12)) / 4
  thresholds = np.linspace(0.05, 0.95, 19)
  neighbourhood = lr.object_neighbourhood(objects, radius=2)
  sweep = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v, thresholds=thresholds,
                                   levels=[1.0], neighbourhood=neighbourhood)
  assert len(set(lr.threshold_classes(pred_h, pred_v, thresholds))) == 4
  for k, threshold in enumerate(thresholds):
    single = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                      thresholds=[threshold], levels=[1.0],
                                      neighbourhood=neighbourhood)
    assert single.predicted[0] == sweep.predicted[k]
    assert single.false[0] == sweep.false[k]
    assert single.recovered[0, 0] == sweep.recovered[0, k]


def _as_list(value):
  if isinstance(value, np.ndarray):
    return list(value.ravel())
  return [value]


def _read_pascal_part(path):
  """Instance map, part map and {instance: VOC class} of one real annotation.

  Objects are stacked largest first (smaller ones stay visible), parts over
  their object; parts are numbered globally so no two objects share one.
  """
  import scipy.io
  anno = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["anno"]
  objects = _as_list(anno.objects)
  shape = objects[0].mask.shape
  instances = np.zeros(shape, np.int64)
  parts = np.zeros(shape, np.int64)
  classes = {}
  next_part = 1
  for index in np.argsort([-int(np.count_nonzero(o.mask)) for o in objects]):
    obj = objects[index]
    instance_id = int(index) + 1
    classes[instance_id] = int(obj.class_ind)
    instances[obj.mask > 0] = instance_id
    parts[obj.mask > 0] = next_part
    next_part += 1
    part_list = [p for p in _as_list(obj.parts) if hasattr(p, "mask")]
    for part in sorted(part_list, key=lambda p: -int(np.count_nonzero(p.mask))):
      parts[(part.mask > 0) & (obj.mask > 0)] = next_part
      next_part += 1
  # Keep parts inside the visible part of their instance (later objects cover earlier ones).
  parts = parts * 1000 + instances
  return instances, parts, classes


def test_real_pascal_part_annotations(shared_data):
  import glob
  paths = sorted(glob.glob(str(shared_data / "pascal_part_sample" / "Annotations_Part" /
                               "*.mat")))[:3]
  assert paths, "no Pascal-Part annotation in the shared sample"
  truth_vs_truth = lr.LevelRecoveryAccumulator()
  objects_only = lr.LevelRecoveryAccumulator()
  for path in paths:
    instances, parts, classes = _read_pascal_part(path)
    truth_h, truth_v = _ultrametric([parts, instances], [0.5, 1.0])
    truth_vs_truth.add(truth_h, truth_v, truth_h, truth_v, instances=instances,
                       instance_classes=classes)
    # A prediction that knows the objects but no parts.
    object_h, object_v = _ultrametric([instances], [1.0])
    objects_only.add(object_h, object_v, truth_h, truth_v, instances=instances,
                     instance_classes=classes)
  thresholds = truth_vs_truth.thresholds
  result = truth_vs_truth.result()
  np.testing.assert_array_equal(result["fdf"], 0)
  np.testing.assert_array_equal(result["lrf"][0], (thresholds < 0.5).astype(float))
  np.testing.assert_array_equal(result["lrf"][1], 1)
  for per_class in result["per_class"].values():
    np.testing.assert_array_equal(per_class["fdf"], 0)
    np.testing.assert_array_equal(per_class["lrf"][1], 1)
  degraded = objects_only.result()
  np.testing.assert_array_equal(degraded["lrf"][0], 0)
  np.testing.assert_array_equal(degraded["lrf"][1], 1)
  np.testing.assert_array_equal(degraded["fdf"], 0)


def test_level_survival_orders_the_levels():
  _, truth_h, truth_v, pred_h, pred_v = _two_part_object()
  acc = lr.LevelRecoveryAccumulator(thresholds=[0.2, 0.5, 0.7, 0.9])
  acc.add(pred_h, pred_v, truth_h, truth_v)
  # Parts (predicted 0.3) survive up to t = 0.2, objects (0.8) up to t = 0.7.
  assert lr.level_survival(acc.result()) == {0.5: 0.2, 1.0: 0.7}
  empty = lr.LevelRecoveryAccumulator(thresholds=[0.2])
  empty.add(np.zeros_like(pred_h), np.zeros_like(pred_v), truth_h, truth_v)
  assert np.isnan(lr.level_survival(empty.result())[1.0])


def test_accumulator_pickles_for_worker_processes():
  import pickle
  _, truth_h, truth_v, pred_h, pred_v = _two_part_object()
  acc = lr.LevelRecoveryAccumulator(thresholds=[0.2, 0.5])
  acc.add(pred_h, pred_v, truth_h, truth_v)
  copy = pickle.loads(pickle.dumps(acc))
  copy.merge(acc)
  np.testing.assert_array_equal(copy.total.truth, 2 * acc.total.truth)
  np.testing.assert_array_equal(copy.result()["lrf"], acc.result()["lrf"])


def test_summary_table_whole_and_per_class():
  _, truth_h, truth_v, pred_h, pred_v = _two_part_object()
  instances = np.tile(np.array([1, 1, 1, 1, 0, 0]), (4, 1))
  acc = lr.LevelRecoveryAccumulator(thresholds=[0.2, 0.5, 0.7, 0.9], radius=1)
  acc.add(pred_h, pred_v, truth_h, truth_v, instances=instances, instance_classes={1: 12})
  table = lr.summary(acc.result())
  # LRF parts [1, 0, 0, 0], objects [1, 1, 1, 0]; FDF 0 (the far contour is dropped).
  assert table["mean_lrf"] == {0.5: 0.25, 1.0: 0.75}
  assert table["survival"] == {0.5: 0.2, 1.0: 0.7}
  assert table["mean_fdf"] == 0.0
  assert table["per_class"][12]["mean_lrf"] == {0.5: 0.25, 1.0: 0.75}
  assert table["per_class"][12]["num_instances"] == 1


def _edge_points(h, v):
  """(row, col) pixel-unit midpoints of the set edges of boolean (h, v)."""
  rows_h, cols_h = np.nonzero(h)
  rows_v, cols_v = np.nonzero(v)
  return np.concatenate([np.stack([rows_h, cols_h + 0.5], 1),
                         np.stack([rows_v + 0.5, cols_v], 1)])


def test_tolerance_matches_brute_force_distances():
  rng = np.random.default_rng(7)
  objects = np.zeros((14, 16), int)
  objects[3:9, 2:9] = 1
  objects[9:13, 8:15] = 2
  parts = objects * 10 + (np.arange(16)[None, :] % 5 == 0) * (objects > 0)
  truth_h, truth_v = _ultrametric([parts, objects], [0.5, 1.0])
  pred_h = np.clip(np.roll(truth_h, 1, axis=1) + 0.3 * rng.random(truth_h.shape), 0, 1)
  pred_v = np.clip(np.roll(truth_v, 1, axis=0) + 0.3 * rng.random(truth_v.shape), 0, 1)
  neighbourhood = lr.object_neighbourhood(objects, radius=2)
  thresholds = [0.7, 0.2, 0.45, 0.9]  # unsorted on purpose
  tolerance = 1.5
  counts = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v, thresholds=thresholds,
                                    neighbourhood=neighbourhood, tolerance=tolerance)
  truth_contour = lr.contours_in_neighbourhood(truth_h > 0, truth_v > 0, neighbourhood)
  truth_points = _edge_points(*truth_contour)
  for k, t in enumerate(thresholds):
    pred_points = _edge_points(*lr.contours_in_neighbourhood(pred_h > t, pred_v > t,
                                                            neighbourhood))
    assert counts.predicted[k] == len(pred_points)
    if len(pred_points):
      gaps = np.linalg.norm(pred_points[:, None] - truth_points[None], axis=-1).min(axis=1)
      assert counts.false[k] == (gaps > tolerance).sum()
    for l, level in enumerate((0.5, 1.0)):
      level_points = _edge_points(truth_contour[0] & np.isclose(truth_h, level),
                                  truth_contour[1] & np.isclose(truth_v, level))
      if len(pred_points):
        reach = np.linalg.norm(level_points[:, None] - pred_points[None], axis=-1).min(axis=1)
        expected = (reach <= tolerance).sum()
      else:
        expected = 0
      assert counts.recovered[l, k] == expected, (k, l)
