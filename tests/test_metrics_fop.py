"""Tests for jhseg.metrics.fop: objects-and-parts F-measure (Pont-Tuset & Marques)."""
import numpy as np
import pytest

from jhseg.metrics import fop

WHOLE = np.zeros((10, 10), int)
HALVES = np.repeat(np.array([[0] * 5 + [1] * 5]), 10, axis=0)


def test_identical_segmentation_scores_one():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.repeat(rng.integers(0, 5, (4, 4)), 5, axis=0), 5, axis=1)
  scores = fop.objects_and_parts(labels, [labels])
  assert scores == {"precision": 1.0, "recall": 1.0, "f": 1.0}


def test_under_segmentation_hand_computed():
  # Truth halves A, B (50 px each) inside one predicted region P (100 px):
  # p(P, A) = 0.5, r(P, A) = 1, so each half is a *part* of P (recall: 2 beta / 2);
  # P is no object or part but is credited its fragmentation p(A) + p(B) = 1.
  scores = fop.objects_and_parts(WHOLE, [HALVES])
  assert scores["precision"] == pytest.approx(1.0)
  assert scores["recall"] == pytest.approx(0.1)
  assert scores["f"] == pytest.approx(2 * 0.1 / 1.1)


def test_over_segmentation_is_the_mirror_case():
  scores = fop.objects_and_parts(HALVES, [WHOLE])
  assert scores["precision"] == pytest.approx(0.1)
  assert scores["recall"] == pytest.approx(1.0)


def test_small_regions_are_not_candidates():
  truth = WHOLE.copy()
  truth[0, 0] = 1  # 1% of the image: outside the 99% area percentile
  # The prediction misses the speck entirely: still a perfect score.
  assert fop.objects_and_parts(WHOLE, [truth])["f"] == pytest.approx(1.0)
  # A 2-pixel region is a candidate, and missing it costs recall (1 of 2 found).
  truth[0, 1] = 1
  scores = fop.objects_and_parts(WHOLE, [truth])
  assert scores["recall"] == pytest.approx(0.5)
  assert scores["precision"] == pytest.approx(1.0)


def test_duplicate_annotators_change_nothing():
  rng = np.random.default_rng(1)
  prediction = np.repeat(rng.integers(0, 3, (5, 5)), 2, axis=0).repeat(2, axis=1)
  truth = np.repeat(rng.integers(0, 4, (5, 5)), 2, axis=0).repeat(2, axis=1)
  once = fop.objects_and_parts(prediction, [truth])
  twice = fop.objects_and_parts(prediction, [truth, truth])
  for key in once:
    assert twice[key] == pytest.approx(once[key])
  relabelled = fop.objects_and_parts(rng.permutation(3)[prediction] + 4, [truth])
  assert relabelled["f"] == pytest.approx(once["f"])


def test_ods_ois_hand_computed():
  acc = fop.FopAccumulator(thresholds=[0.3, 0.7])
  # Image X (truth halves): whole -> (P 1, R 0.1), halves -> (1, 1).
  x = acc.add_segmentations([WHOLE, HALVES], [HALVES])
  np.testing.assert_allclose(x[:, :2], [[1, 0.1], [1, 1]])
  # Image Y (truth whole): whole -> (1, 1), halves -> (0.1, 1).
  acc.add_segmentations([WHOLE, HALVES], [WHOLE])
  result = acc.result()
  # Per threshold: (P, R) = (1, 0.55) and (0.55, 1): F = 1.1 / 1.55 both.
  np.testing.assert_allclose(result["per_threshold"]["f"], [1.1 / 1.55] * 2)
  assert result["ods"]["f"] == pytest.approx(1.1 / 1.55)
  assert result["ods"]["threshold"] == 0.3
  # Each image at its own best position is perfect.
  assert result["ois"]["f"] == pytest.approx(1.0)


def test_hierarchy_sweep_equals_its_cuts():
  parts = np.repeat(np.array([[1, 1, 2, 2, 3, 3, 0, 0]]), 6, axis=0)
  parts[4:, :6] = 4
  objects = np.where(parts > 0, 1, 0)
  h = np.maximum(0.5 * (parts[:, 1:] != parts[:, :-1]), 1.0 * (objects[:, 1:] != objects[:, :-1]))
  v = np.maximum(0.5 * (parts[1:] != parts[:-1]), 1.0 * (objects[1:] != objects[:-1]))
  from_hierarchy = fop.FopAccumulator(thresholds=[0.25, 0.75])
  from_hierarchy.add_hierarchy(h, v, [parts])
  from_cuts = fop.FopAccumulator(thresholds=[0.25, 0.75])
  from_cuts.add_segmentations([parts, objects], [parts])
  np.testing.assert_allclose(from_hierarchy.precision[0], from_cuts.precision[0])
  np.testing.assert_allclose(from_hierarchy.recall[0], from_cuts.recall[0])
  assert from_hierarchy.result()["ods"]["f"] == pytest.approx(1.0)
  assert from_hierarchy.result()["ods"]["threshold"] == 0.25


def test_merge_equals_single_pass():
  whole, first, second = (fop.FopAccumulator(thresholds=[0.3, 0.7]) for _ in range(3))
  for i, truth in enumerate([HALVES, WHOLE, HALVES]):
    whole.add_segmentations([WHOLE, HALVES], [truth])
    (first if i == 0 else second).add_segmentations([WHOLE, HALVES], [truth])
  first.merge(second)
  assert first.result()["ods"] == whole.result()["ods"]
  assert first.result()["ois"] == whole.result()["ois"]


def test_failure_modes():
  with pytest.raises(ValueError, match="truths\\[0\\] has shape"):
    fop.objects_and_parts(WHOLE, [np.zeros((3, 3), int)])
  with pytest.raises(ValueError, match="at least one ground truth"):
    fop.objects_and_parts(WHOLE, [])
  acc = fop.FopAccumulator(thresholds=[0.5])
  with pytest.raises(ValueError, match="no image"):
    acc.result()
  acc.add_segmentations([WHOLE], [WHOLE])
  with pytest.raises(ValueError, match="earlier images had 1"):
    acc.add_segmentations([WHOLE, HALVES], [WHOLE])
  with pytest.raises(ValueError, match="must be \\(H, W-1\\) and \\(H-1, W\\)"):
    acc.add_hierarchy(np.zeros((4, 4)), np.zeros((4, 4)), [WHOLE])


def test_hierarchy_sweep_equals_explicit_cuts_on_quantized_weights():
  from jhseg.metrics import level_recovery
  rng = np.random.default_rng(3)
  h, v = rng.integers(0, 4, (10, 9)) / 3, rng.integers(0, 4, (9, 10)) / 3
  thresholds = np.linspace(0.1, 0.9, 9)
  sweep = fop.FopAccumulator(thresholds=thresholds)
  scores = sweep.add_hierarchy(h, v, [HALVES])
  explicit = fop.FopAccumulator(thresholds=thresholds)
  expected = explicit.add_segmentations(
      [level_recovery.contour_regions(h > t, v > t) for t in thresholds], [HALVES])
  np.testing.assert_allclose(scores, expected)


def test_accumulator_pickles_for_worker_processes():
  import pickle
  acc = fop.FopAccumulator(thresholds=[0.3, 0.7])
  acc.add_segmentations([WHOLE, HALVES], [HALVES])
  copy = pickle.loads(pickle.dumps(acc))
  copy.merge(acc)
  assert copy.result()["ods"] == acc.result()["ods"]
  assert copy.result()["num_images"] == 2
