"""Tests for jhseg.metrics.covering: NFCovering (HSG eq. 10) and the region F-score."""
import itertools

import numpy as np
import pytest

from jhseg.metrics import covering

TRUTH = np.array([[0, 0, 1, 1],
                  [0, 0, 1, 1],
                  [0, 0, 2, 2],
                  [0, 0, 2, 2]])
HALVES = np.array([[5, 5, 7, 7]] * 4)


def test_nf_covering_hand_computed():
  # Truth regions 1 and 2 (4 px each) both overlap predicted region 7 (8 px): IoU 1/2.
  assert covering.nf_covering(HALVES, TRUTH) == pytest.approx(0.5)
  # With the background counted as a region it is covered exactly (IoU 1).
  assert covering.nf_covering(HALVES, TRUTH, background=None) == pytest.approx(2 / 3)
  # Normalised: each region counts once, unlike area-weighted covering (0.75 here).
  area_weighted = (8 * 1 + 4 * 0.5 + 4 * 0.5) / 16
  assert area_weighted == 0.75


def test_nf_covering_identity_and_relabelling_invariance():
  rng = np.random.default_rng(0)
  truth = rng.integers(0, 6, size=(9, 11))
  prediction = rng.integers(0, 4, size=(9, 11))
  assert covering.nf_covering(truth, truth) == 1.0
  value = covering.nf_covering(prediction, truth)
  permuted_prediction = rng.permutation(10)[prediction] + 100
  assert covering.nf_covering(permuted_prediction, truth) == pytest.approx(value)
  # Relabelling the truth (keeping which region is background) too.
  truth_ids = np.concatenate([[0], rng.permutation(np.arange(1, 6)) + 10])
  assert covering.nf_covering(prediction, truth_ids[truth]) == pytest.approx(value)


def test_nf_covering_ignore_and_no_foreground():
  truth = TRUTH.copy()
  truth[2:, 2:] = 255  # region 2 unlabelled
  # Ignored pixels leave both segmentations: region 1 = predicted 7 on what remains.
  assert covering.nf_covering(HALVES, truth, ignore=255) == 1.0
  # Not ignored, 255 is one more foreground region, and 7 covers each half.
  assert covering.nf_covering(HALVES, truth) == pytest.approx(0.5)
  assert np.isnan(covering.nf_covering(HALVES, np.zeros((4, 4), int)))


def test_nf_covering_ignores_the_voc_void_band():
  """An object (class 15, 2x2) inside a 1-pixel void band (255) on background 0, and a
  prediction perfect on the labelled pixels: one 4x4 region over object + band.

  Band kept (counted as a region): object IoU 4/16, band IoU 12/16, mean 0.5.
  Band ignored (HSG eq. 10 on the labelled pixels): the region is the object, IoU 1.
  """
  truth = np.zeros((6, 6), int)
  truth[1:5, 1:5] = covering.VOID
  truth[2:4, 2:4] = 15
  prediction = np.zeros((6, 6), int)
  prediction[1:5, 1:5] = 1
  assert covering.nf_covering(prediction, truth, ignore=None) == pytest.approx(0.5)
  assert covering.nf_covering(prediction, truth, ignore=covering.VOID) == 1.0
  acc = covering.NFCoveringAccumulator(background=0, ignore=covering.VOID)
  acc.add([prediction, np.zeros((6, 6), int)], [truth])
  # The single-region level covers the object with IoU 4 / 24 once the band is gone.
  np.testing.assert_allclose(acc.result()["per_level"], [[1.0, 4 / 24]])


def test_accumulator_per_level_matrix_and_best():
  parts = TRUTH
  objects = np.where(TRUTH > 0, 1, 0)
  acc = covering.NFCoveringAccumulator()
  # Identical two-level hierarchies: each level covers its own level exactly.
  values = acc.add([parts, objects], [parts, objects])
  assert values[0, 0] == 1.0 and values[1, 1] == 1.0
  # Predicted objects cover the truth parts with IoU 4/8 each.
  assert values[0, 1] == pytest.approx(0.5)
  acc.add([HALVES, HALVES], [parts, objects])
  acc.add([HALVES, HALVES], [np.zeros((4, 4), int), objects])  # no foreground parts
  result = acc.result()
  np.testing.assert_allclose(result["per_level"][0], [(1 + 0.5) / 2, (0.5 + 0.5) / 2])
  np.testing.assert_allclose(result["per_level"][1], [(0.5 + 1 + 1) / 3, 1.0])
  np.testing.assert_allclose(result["best"], [(1 + 0.5) / 2, 1.0])
  np.testing.assert_array_equal(result["num_images_with_foreground"], [2, 3])
  with pytest.raises(ValueError, match="earlier images had"):
    acc.add([HALVES], [parts])


def _brute_force_region_pr(prediction, truth):
  pixels = list(zip(prediction.ravel(), truth.ravel()))
  both = same_pred = same_truth = 0
  for (p1, t1), (p2, t2) in itertools.combinations(pixels, 2):
    same_pred += p1 == p2
    same_truth += t1 == t2
    both += (p1 == p2) and (t1 == t2)
  return both / same_pred, both / same_truth


def test_region_f_score_hand_computed_and_brute_force():
  scores = covering.region_f_score(np.zeros((1, 4), int), np.array([[0, 0, 1, 1]]))
  # 6 pairs together in the prediction, 2 in the truth, 2 in both.
  assert scores["precision"] == pytest.approx(1 / 3)
  assert scores["recall"] == pytest.approx(1.0)
  assert scores["f"] == pytest.approx(0.5)
  rng = np.random.default_rng(1)
  prediction = rng.integers(0, 3, size=(4, 5))
  truth = rng.integers(0, 4, size=(4, 5))
  scores = covering.region_f_score(prediction, truth)
  precision, recall = _brute_force_region_pr(prediction, truth)
  assert scores["precision"] == pytest.approx(precision)
  assert scores["recall"] == pytest.approx(recall)
  swapped = covering.region_f_score(truth, prediction)
  assert swapped["precision"] == pytest.approx(scores["recall"])
  assert covering.region_f_score(truth, truth)["f"] == 1.0
  # Relabelling leaves it unchanged.
  assert covering.region_f_score(rng.permutation(3)[prediction] + 7, truth)["f"] == (
      pytest.approx(scores["f"]))


def test_region_f_accumulator():
  acc = covering.RegionFScoreAccumulator()
  acc.add(np.zeros((1, 4), int), np.array([[0, 0, 1, 1]]))
  acc.add(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 1]]))
  result = acc.result()
  assert result["precision"] == pytest.approx((1 / 3 + 1) / 2)
  assert result["recall"] == 1.0
  assert result["mean_f"] == pytest.approx((0.5 + 1) / 2)
  p = (1 / 3 + 1) / 2
  assert result["f"] == pytest.approx(2 * p / (p + 1))


def test_failure_modes():
  with pytest.raises(ValueError, match="one \\(H, W\\) shape"):
    covering.nf_covering(np.zeros((2, 2), int), np.zeros((2, 3), int))
  with pytest.raises(ValueError, match="prediction must be an integer label map"):
    covering.region_f_score(np.zeros((2, 2)), np.zeros((2, 2), int))
  with pytest.raises(ValueError, match="exactly one"):
    covering.levels_from_hierarchy(np.zeros((2, 1)), np.zeros((1, 2)))
  with pytest.raises(ValueError, match="no image"):
    covering.NFCoveringAccumulator().result()
  with pytest.raises(ValueError, match="at least one"):
    covering.NFCoveringAccumulator().add([], [TRUTH])


def test_levels_from_hierarchy_recovers_nested_labels():
  from jhseg import hierarchy
  if not hasattr(hierarchy, "cut_with_num_regions"):
    pytest.skip("jhseg.hierarchy.cut_with_num_regions not available yet")
  objects = np.where(TRUTH > 0, 1, 0)
  h = np.maximum(0.5 * (TRUTH[:, 1:] != TRUTH[:, :-1]), 1.0 * (objects[:, 1:] != objects[:, :-1]))
  v = np.maximum(0.5 * (TRUTH[1:] != TRUTH[:-1]), 1.0 * (objects[1:] != objects[:-1]))
  by_count = covering.levels_from_hierarchy(h, v, num_regions=[3, 2])
  by_threshold = covering.levels_from_hierarchy(h, v, thresholds=[0.25, 0.75])
  for levels in (by_count, by_threshold):
    assert covering.nf_covering(levels[0], TRUTH, background=None) == 1.0
    assert covering.nf_covering(levels[1], objects, background=None) == 1.0


def test_accumulators_take_hierarchies():
  objects = np.where(TRUTH > 0, 1, 0)
  h = np.maximum(0.5 * (TRUTH[:, 1:] != TRUTH[:, :-1]), 1.0 * (objects[:, 1:] != objects[:, :-1]))
  v = np.maximum(0.5 * (TRUTH[1:] != TRUTH[:-1]), 1.0 * (objects[1:] != objects[:-1]))
  nf = covering.NFCoveringAccumulator()
  values = nf.add_hierarchy(h, v, [TRUTH, objects], num_regions=[3, 2])
  np.testing.assert_allclose(np.diag(values), [1.0, 1.0])
  region_f = covering.RegionFScoreAccumulator(num_regions=2)
  assert region_f.add_hierarchy(h, v, objects)["f"] == 1.0
  with pytest.raises(ValueError, match="num_regions="):
    covering.RegionFScoreAccumulator().add_hierarchy(h, v, objects)
