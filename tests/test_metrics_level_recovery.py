"""Tests for jhseg.metrics.level_recovery (LRF/FDF, eqs. 3-4 of Lapertot et al.)."""
import edge_ultrametric_reference  # tests/edge_ultrametric_reference.py
import numpy as np
import pytest

from jhseg.metrics import level_recovery as lr


_ultrametric = edge_ultrametric_reference.edge_ultrametric


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
  thresholds = lr.sweep_thresholds(9)  # 0, 0.1, ..., 1
  for neighbourhood in (None, lr.object_neighbourhood(objects, radius=2)):
    counts = lr.level_recovery_counts(truth_h, truth_v, truth_h, truth_v,
                                      thresholds=thresholds, neighbourhood=neighbourhood)
    np.testing.assert_array_equal(counts.false_discovery_fraction(), 0)
    lrf = counts.level_recovery_fraction()
    # Sec. 4: a weight-lambda edge is a contour while t <= lambda (rule weight >= t).
    np.testing.assert_array_equal(lrf[0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
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


def test_failure_modes():
  h, v = np.zeros((4, 5)), np.zeros((3, 6))
  with pytest.raises(ValueError, match="predicted edges are for a 3x6 image"):
    lr.level_recovery_counts(np.zeros((3, 5)), np.zeros((2, 6)), h, v, thresholds=[0.5])
  with pytest.raises(ValueError, match="do not describe one H x W image"):
    lr.level_recovery_counts(h, v, np.zeros((4, 5)), np.zeros((4, 6)), thresholds=[0.5])
  with pytest.raises(ValueError, match="neighbourhood has shape"):
    lr.level_recovery_counts(h, v, h, v, thresholds=[0.5], neighbourhood=np.ones((3, 3)))
  with pytest.raises(ValueError, match="num must be >= 1"):
    lr.sweep_thresholds(0)
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
  # Positive weights 0.25, 0.5, 0.75, 1: four distinct cuts "weight >= t" for t in (0, 1].
  assert len(set(lr.contour_classes(pred_h, pred_v, thresholds))) == 4
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


@pytest.mark.parametrize("level_matching,thin", [("exact", False), ("bsds", False),
                                                  ("bsds", True)])
def test_real_pascal_part_annotations(shared_data, level_matching, thin):
  import glob
  from jhseg.metrics import ucm_evaluation
  paths = sorted(glob.glob(str(shared_data / "pascal_part_sample" / "Annotations_Part" /
                               "*.mat")))[:3]
  assert paths, "no Pascal-Part annotation in the shared sample"
  thresholds = lr.sweep_thresholds(9)
  make = lambda: ucm_evaluation.UcmEvaluation(thresholds=thresholds,
                                              level_matching=level_matching, thin=thin)
  truth_vs_truth, objects_only = make(), make()
  for path in paths:
    instances, parts, classes = _read_pascal_part(path)
    truth_h, truth_v = _ultrametric([parts, instances], [0.5, 1.0])
    truth_vs_truth.add(truth_h, truth_v, truth_h, truth_v, instances=instances,
                       instance_classes=classes)
    # A prediction that knows the objects but no parts.
    object_h, object_v = _ultrametric([instances], [1.0])
    objects_only.add(object_h, object_v, truth_h, truth_v, instances=instances,
                     instance_classes=classes)
  result = truth_vs_truth.result()
  degraded = objects_only.result()
  np.testing.assert_array_equal(result["lrf"][0][thresholds <= 0.5], 1)
  np.testing.assert_array_equal(result["fdf"][thresholds <= 0.5], 0)
  for per_class in result["per_class"].values():
    np.testing.assert_array_equal(per_class["lrf"][1][thresholds <= 0.5], 1)
  if level_matching == "exact" or not thin:  # exact edges, or unthinned maps: exactly 1 / 0
    np.testing.assert_array_equal(result["lrf"][0][thresholds > 0.5], 0)
    np.testing.assert_array_equal(result["lrf"][1], 1)
    np.testing.assert_array_equal(result["fdf"], 0)
    np.testing.assert_array_equal(degraded["lrf"][0], 0)
    np.testing.assert_array_equal(degraded["lrf"][1], 1)
    np.testing.assert_array_equal(degraded["fdf"], 0)
  else:
    # Above 0.5 the machine map is the objects' boundaries alone, thinned on its own: a few
    # junction pixels move, and part pixels within the tolerance of an object contour match.
    assert np.all(result["lrf"][0][thresholds > 0.5] < 0.1)
    assert np.all(result["lrf"][1] > 0.98) and np.all(result["fdf"] < 0.02)
    assert np.all(degraded["lrf"][0] < 0.1) and np.all(degraded["lrf"][1] > 0.98)
    assert result["boundary"].ods_f == pytest.approx(1.0)


def test_sweep_includes_both_ends_and_the_levels():
  np.testing.assert_allclose(lr.sweep_thresholds(9), np.arange(11) / 10)
  t = lr.sweep_thresholds(99)
  assert len(t) == 101 and t[0] == 0.0 and t[-1] == 1.0
  np.testing.assert_allclose(t[[25, 50, 75]], [0.25, 0.5, 0.75])
  # The inner thresholds are the BSDS benchmark's.
  np.testing.assert_allclose(t[1:-1], lr.default_thresholds(99))


def test_contours_at_is_weight_at_least_t_and_never_zero():
  h = np.array([[0.0, 0.5, 1.0]])
  v = np.zeros((0, 4))
  for t, expected in ((0.0, [0, 1, 1]), (0.25, [0, 1, 1]), (0.5, [0, 1, 1]), (0.75, [0, 0, 1]),
                      (1.0, [0, 0, 1])):
    np.testing.assert_array_equal(lr.contours_at(h, v, t)[0][0], expected, err_msg=str(t))
  # Classes: how many positive weights are >= t.
  np.testing.assert_array_equal(lr.contour_classes(h, v, [0, 0.5, 0.6, 1.0, 1.1]), [2, 2, 1, 1, 0])


def _curves(thresholds, parts, objects):
  return {"thresholds": np.asarray(thresholds), "levels": (0.5, 1.0),
          "lrf": np.array([parts, objects], float), "fdf": np.zeros(len(thresholds))}


def test_level_survival_is_relative_to_the_lowest_threshold():
  t = [0.0, 0.25, 0.5, 0.75, 1.0]
  # The target itself: parts recovered up to 0.5, objects up to 1.
  assert lr.level_survival(_curves(t, [1, 1, 1, 0, 0], [1, 1, 1, 1, 1])) == {0.5: 0.5, 1.0: 1.0}
  # Half of the part contours recovered at t = 0, lost after 0.25: still a survival.
  # Objects 0.8 -> 0.4 at 0.75 (= half of 0.8, kept), 0.3 at 1.
  assert lr.level_survival(_curves(t, [0.5, 0.5, 0.2, 0, 0], [0.8, 0.8, 0.6, 0.4, 0.3])) == {
      0.5: 0.25, 1.0: 0.75}
  never = lr.level_survival(_curves(t, [0, 0, 0, 0, 0], [np.nan] * 5))
  assert np.isnan(never[0.5]) and np.isnan(never[1.0])


def test_summary_table_whole_and_per_class():
  t = [0.0, 0.5, 0.75, 1.0]
  result = _curves(t, [1, 1, 0, 0], [1, 1, 1, 0.25])
  result["per_class"] = {12: {**_curves(t, [1, 0, 0, 0], [1, 1, 1, 1]), "num_instances": 3}}
  table = lr.summary(result)
  assert table["mean_lrf"] == {0.5: 0.5, 1.0: 0.8125}
  assert table["survival"] == {0.5: 0.5, 1.0: 0.75}
  assert table["mean_fdf"] == 0.0
  assert table["per_class"][12]["mean_lrf"] == {0.5: 0.25, 1.0: 1.0}
  assert table["per_class"][12]["survival"] == {0.5: 0.0, 1.0: 1.0}
  assert table["per_class"][12]["num_instances"] == 3
