"""Tests for jhseg.metrics.ucm_evaluation: LRF/FDF with the BSDS correspondence, PR, per class.

Scenes are 120x160 (diagonal 200 px), so the BSDS tolerance 0.0075 x 200 = 1.5 px covers a
one-pixel shift. Expected values are counted by hand from the scene geometry.
"""
import pickle

import edge_ultrametric_reference  # tests/edge_ultrametric_reference.py
import numpy as np
import pytest

from jhseg.metrics import boundary
from jhseg.metrics import level_recovery as lr
from jhseg.metrics import ucm_evaluation as ue

SHAPE = (120, 160)
T = lr.sweep_thresholds(9)  # 0, 0.1, ..., 1


_ultrametric = edge_ultrametric_reference.edge_ultrametric


def _object_with_eye(shift=0):
  """One object (rows 20-99, cols 30-119: 340 boundary edges) with a part inside
  (rows 50-69, cols 50-89: 120 edges), every column moved right by `shift`."""
  objects = np.zeros(SHAPE, int)
  objects[20:100, 30 + shift:120 + shift] = 1
  parts = objects.copy()
  parts[50:70, 50 + shift:90 + shift] = 2
  return objects, _ultrametric([parts, objects], [0.5, 1.0])


# ----------------------------------------------------------------------------- point 1: t rule


@pytest.mark.parametrize("level_matching", ["bsds", "exact"])
def test_target_as_prediction_recovers_each_level_up_to_its_weight(level_matching):
  objects, (h, v) = _object_with_eye()
  for instances in (None, objects):
    evaluation = ue.UcmEvaluation(thresholds=T, level_matching=level_matching)
    evaluation.add(h, v, h, v, instances=instances)
    result = evaluation.result()
    # LRF(lambda, t) = 1 for t <= lambda, 0 above; FDF(t) = 0 for every t (sec. 4).
    np.testing.assert_array_equal(result["lrf"][0], [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(result["lrf"][1], [1] * 11)
    np.testing.assert_array_equal(result["fdf"], 0)
    assert result["boundary"].ods_f == pytest.approx(1.0)
    assert lr.level_survival(result) == {0.5: 0.5, 1.0: 1.0}


# ----------------------------------------------------------------------------- point 2: matching


def test_one_pixel_shift_is_matched_with_the_bsds_tolerance_not_exactly():
  _, truth = _object_with_eye()
  _, shifted = _object_with_eye(shift=1)
  bsds = ue.UcmEvaluation(thresholds=T)
  bsds.add(*shifted, *truth)
  result = bsds.result()
  np.testing.assert_array_equal(result["lrf"][0], [1] * 6 + [0] * 5)
  np.testing.assert_array_equal(result["lrf"][1], 1)
  np.testing.assert_array_equal(result["fdf"], 0)
  exact = ue.UcmEvaluation(thresholds=T, level_matching="exact")
  exact.add(*shifted, *truth)
  result = exact.result()
  # Only the horizontal boundaries overlap after the shift: object top and bottom share 89 of
  # their 90 edges each (178 of 340); the part's share 39 of 40 each (78 of 120).
  np.testing.assert_allclose(result["lrf"][1], 178 / 340)
  np.testing.assert_allclose(result["lrf"][0], [78 / 120] * 6 + [0] * 5)
  # FDF: 460 predicted edges, 256 on the target, below 0.5; 340 with 162 false above.
  np.testing.assert_allclose(result["fdf"], [204 / 460] * 6 + [162 / 340] * 5)
  # The PR curves use BSDS matching in both modes.
  assert result["boundary"].ods_f == pytest.approx(1.0)


def test_fdf_is_one_minus_precision_and_lrf_splits_the_recall():
  objects, (h, v) = _object_with_eye()
  spurious = np.zeros(SHAPE, int)
  spurious[25:35, 95:110] = 1  # a region inside the object, no target contour near it
  pred_h, pred_v = _ultrametric([spurious, np.roll(objects, 1, axis=0)], [0.3, 0.8])
  pr, counts = ue.image_counts(pred_h, pred_v, h, v, thresholds=T,
                               neighbourhood=lr.object_neighbourhood(objects))
  assert counts.false.tolist() == (pr.sum_p - pr.cnt_p).tolist()
  assert counts.predicted.tolist() == pr.sum_p.tolist()
  # Every target boundary pixel has level 0.5 or 1: LRF's counts add up to BSDS recall's.
  assert counts.recovered.sum(axis=0).tolist() == pr.cnt_r.tolist()
  assert counts.truth.sum() == pr.sum_r[0]
  assert 0 < counts.false_discovery_fraction()[1] < 1


def test_pixel_levels_draw_the_official_seg2bdry_map():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, (9, 11))
  h, v = _ultrametric([labels], [1.0])
  np.testing.assert_array_equal(ue.pixel_levels(h, v) > 0,
                                boundary.boundaries_from_segmentation(labels))
  # Weights: the corner's highest edge (a pixel where part and object contours meet is "1").
  h = np.array([[0.5, 0.0], [1.0, 0.0]])
  v = np.array([[0.0, 0.5, 0.0]])
  np.testing.assert_array_equal(ue.pixel_levels(h, v), [[1.0, 0.5, 0.0], [1.0, 0.0, 0.0]])


# ----------------------------------------------------------------------------- point 3: per class


def _two_classes():
  """A "person" (class 15, rows 20-99, cols 30-89) with an eye part (rows 40-59, cols 45-64),
  and touching it on the right a "horse" (class 13, rows 30-79, cols 90-129) with an eye
  part (rows 45-52, cols 96-103) within the person's 20 px neighbourhood."""
  instances = np.zeros(SHAPE, int)
  instances[20:100, 30:90] = 1
  instances[30:80, 90:130] = 2
  parts = instances.copy()
  parts[40:60, 45:65] = 3
  parts[45:53, 96:104] = 4
  return instances, _ultrametric([parts, instances], [0.5, 1.0]), {1: 15, 2: 13}


def test_class_target_drops_other_classes_boundaries():
  instances, (h, v), _ = _two_classes()
  class_h, class_v = ue.class_target(h, v, instances == 1)
  # Kept: the person's 280 boundary edges (incl. its 50-edge frontier with the horse) and its
  # eye's 80; dropped: the horse's other 130 boundary edges and its eye's 32.
  assert (class_h == 1).sum() + (class_v == 1).sum() == 280
  assert (class_h == 0.5).sum() + (class_v == 0.5).sum() == 80
  assert (h == 1).sum() + (v == 1).sum() == 410 and (h == 0.5).sum() + (v == 0.5).sum() == 112


def test_per_class_crops_with_exact_counts():
  instances, (h, v), classes = _two_classes()
  evaluation = ue.UcmEvaluation(thresholds=T, level_matching="exact")
  evaluation.add(h, v, h, v, instances=instances, instance_classes=classes)
  person, horse = evaluation.per_class[15].counts, evaluation.per_class[13].counts
  assert person.truth.tolist() == [80, 280] and horse.truth.tolist() == [32, 180]
  result = evaluation.result()
  for table in result["per_class"].values():
    np.testing.assert_array_equal(table["lrf"][0], [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(table["lrf"][1], 1)
    assert table["num_instances"] == 1
  # Person crop (cols 10-109): the horse's top and bottom (20 edges each, closed by the crop
  # border) and eye (32) are predicted, in the neighbourhood, and not the person's.
  np.testing.assert_allclose(result["per_class"][15]["fdf"], [72 / 432] * 6 + [40 / 320] * 5)
  # Horse crop: the person's contours there are clipped open and dropped, but the frontier.
  np.testing.assert_array_equal(result["per_class"][13]["fdf"], 0)
  assert result["per_class"][13]["boundary"].ods_f == pytest.approx(1.0)
  assert result["per_class"][15]["boundary"].ods_f < 0.99
  assert result["per_class"][15]["boundary"].ods_recall == pytest.approx(1.0)


def test_per_class_with_bsds_matching():
  instances, (h, v), classes = _two_classes()
  evaluation = ue.UcmEvaluation(thresholds=T)
  evaluation.add(h, v, h, v, instances=instances, instance_classes=classes)
  result = evaluation.result()
  assert sorted(result["per_class"]) == [13, 15]
  for table in result["per_class"].values():
    np.testing.assert_array_equal(table["lrf"][0], [1] * 6 + [0] * 5)
    np.testing.assert_array_equal(table["lrf"][1], 1)
  assert np.all(result["per_class"][15]["fdf"] > 0)
  np.testing.assert_array_equal(result["per_class"][13]["fdf"], 0)
  # Whole image: the target itself.
  np.testing.assert_array_equal(result["fdf"], 0)
  assert result["boundary"].ods_f == pytest.approx(1.0)


def test_crop_tolerance_is_the_whole_images():
  # A shifted object alone in a 120x160 image: its crop (~60 x 80 px, diagonal ~100) would match
  # within 0.75 px only, the image within 1.5 px.
  objects = np.zeros(SHAPE, int)
  objects[40:60, 50:90] = 1
  truth = _ultrametric([objects], [1.0])
  shifted = _ultrametric([np.roll(objects, 1, axis=1)], [1.0])
  evaluation = ue.UcmEvaluation(levels=[1.0], thresholds=[0.5])
  evaluation.add(*shifted, *truth, instances=objects, instance_classes={1: 4})
  assert evaluation.result()["per_class"][4]["lrf"][0, 0] == 1.0
  crop = (slice(20, 80), slice(30, 110))
  _, own = ue.image_counts(shifted[0][crop[0], 30:109], shifted[1][20:79, crop[1]],
                           truth[0][crop[0], 30:109], truth[1][20:79, crop[1]],
                           thresholds=[0.5], levels=[1.0])
  assert own.level_recovery_fraction()[0, 0] < 1.0


# ----------------------------------------------------------------------------- plumbing


def test_crop_padding_keeps_the_image():
  target = np.arange(9 * 11, dtype=np.float32).reshape(9, 11)  # padded (5, 6) image
  pred_h, pred_v = np.ones((5, 5)), np.ones((4, 6))
  instances = np.ones((5, 6), int)
  ph, pv, th, tv, inst = ue.crop_padding((3, 4), target, pred_h, pred_v, instances)
  assert ph.shape == (3, 3) and pv.shape == (2, 4) and inst.shape == (3, 4)
  np.testing.assert_array_equal(th, target[0:5:2, 1:7:2])
  np.testing.assert_array_equal(tv, target[1:5:2, 0:7:2])


def test_merge_equals_single_pass_and_pickles():
  objects, (h, v) = _object_with_eye()
  rng = np.random.default_rng(2)
  images = [(np.clip(h + 0.3 * rng.random(h.shape), 0, 1), v) for _ in range(3)]
  whole, first, second = (ue.UcmEvaluation(thresholds=[0.3, 0.6]) for _ in range(3))
  for k, (ph, pv) in enumerate(images):
    for evaluation in (whole, first if k == 0 else second):
      evaluation.add(ph, pv, h, v, instances=objects, instance_classes={1: 0})
  first.merge(pickle.loads(pickle.dumps(second)))
  one, two = first.result(), whole.result()
  np.testing.assert_array_equal(one["lrf"], two["lrf"])
  np.testing.assert_array_equal(one["fdf"], two["fdf"])
  assert one["boundary"].ods_f == two["boundary"].ods_f
  assert one["per_class"][0]["num_instances"] == 3
  assert one["per_class"][0]["boundary"].ap == two["per_class"][0]["boundary"].ap
  with pytest.raises(ValueError, match="must match"):
    first.merge(ue.UcmEvaluation(thresholds=[0.5]))


def test_failure_modes():
  h, v = np.zeros((4, 5)), np.zeros((3, 6))
  with pytest.raises(ValueError, match="unknown level_matching 'edges'"):
    ue.UcmEvaluation(level_matching="edges")
  with pytest.raises(ValueError, match="unknown matcher"):
    ue.UcmEvaluation(matcher="nearest")
  evaluation = ue.UcmEvaluation()
  with pytest.raises(ValueError, match="no image was added"):
    evaluation.result()
  objects = np.zeros((4, 6), int)
  objects[1, 1] = 2
  with pytest.raises(ValueError, match="instance 2 is in the instance map"):
    evaluation.add(h, v, h, v, instances=objects, instance_classes={1: 0})
  with pytest.raises(ValueError, match="needs instances"):
    evaluation.add(h, v, h, v, instance_classes={1: 0})
  with pytest.raises(ValueError, match="predicted edges are for a 3x6 image"):
    ue.image_counts(np.zeros((3, 5)), np.zeros((2, 6)), h, v, thresholds=[0.5])
  with pytest.raises(ValueError, match="neighbourhood has shape"):
    ue.image_counts(h, v, h, v, thresholds=[0.5], neighbourhood=np.ones((3, 3)))


def test_bsds_scores_of_the_ground_truth_ucm_are_perfect_and_empty_is_an_error():
  labels = np.zeros((8, 10), np.int32)
  labels[:, 6:] = 1
  labels[5:, :6] = 2
  h = (labels[:, :-1] != labels[:, 1:]).astype(np.float64)
  v = (labels[:-1, :] != labels[1:, :]).astype(np.float64)
  ucm2 = ue.ucm2_from_edges(h, v)
  assert ucm2.shape == (17, 21)
  scores = ue.BsdsUcmScores(num_thresholds=5)
  with pytest.raises(ValueError, match="no image"):
    scores.result()
  truth_boundaries = [boundary.boundaries_from_segmentation(labels)]
  scores.add(ucm2, [labels + 1], truth_boundaries, max_distance=0.0075)
  b, r = scores.result()
  # The benchmark thins the machine contours (bwmorph 'thin'): the T-junction pixel goes,
  # so 12 of the 13 human boundary pixels are matched and all 12 machine pixels are:
  # F = 2 (12/13) / (1 + 12/13) = 24/25. The regions are recovered exactly.
  assert b.ods_f == pytest.approx(24 / 25) and r.covering_ods == pytest.approx(1.0)
  # A UCM without any contour is one region: recall 0, covering of the largest segment.
  scores = ue.BsdsUcmScores(num_thresholds=5)
  scores.add(np.zeros_like(ucm2), [labels + 1], truth_boundaries, max_distance=0.0075)
  b, r = scores.result()
  sizes = np.bincount(labels.ravel())
  assert b.ods_f == 0.0
  assert r.covering_ods == pytest.approx(np.sum(sizes * sizes / (80 + 0.0) / 80))
