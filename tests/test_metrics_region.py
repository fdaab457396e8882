"""BSDS region benchmark: covering, PRI, VOI by hand and against the official outputs."""
import functools

import numpy as np
import pytest

from jhseg.metrics import bsds_io
from jhseg.metrics import region

IDS = ("2018", "3063", "5096", "6046", "8068")


def test_two_halves_against_one_region_by_hand():
  truth = np.array([[1, 1], [2, 2]])
  seg = np.ones((2, 2), int)
  c = region.region_counts_from_segmentations([seg, truth], [truth])
  # Covering: each 2-pixel human region overlaps the 4-pixel machine region by 2/4.
  np.testing.assert_allclose(c.cnt_r / c.sum_r, [0.5, 1.0])
  np.testing.assert_allclose(c.cnt_p / c.sum_p, [0.5, 1.0])
  # Rand index: 2 of the 6 pixel pairs agree (the two same-label pairs of the truth).
  np.testing.assert_allclose(c.pri, [1 / 3, 1.0])
  # VOI = H(truth) + H(seg) - 2 I = 1 bit + 0 - 0.
  np.testing.assert_allclose(c.voi, [1.0, 0.0], atol=1e-12)
  assert c.cnt_r_best == pytest.approx(4.0)


def test_rand_index_and_voi_of_independent_splits():
  # A = left/right halves, B = top/bottom halves of a 2x2 image: independent partitions.
  table = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]])
  assert region.variation_of_information(table) == pytest.approx(2.0)  # H(A) + H(B), I = 0
  # Pairs: 6; agreeing pairs: none together in both, 2 split in both (the diagonals).
  assert region.rand_index(table) == pytest.approx(2 / 6)


def test_label_zero_is_not_a_region():
  truth = np.array([[1, 1, 2, 2]])
  seg = np.array([[0, 0, 5, 5]])
  c = region.region_counts_from_segmentations([seg], [truth])
  assert c.sum_p[0] == 2  # only label 5 counts as a machine region
  assert c.cnt_r[0] / c.sum_r[0] == pytest.approx(0.5)  # region 2 is covered, region 1 is not


def test_segmentations_from_ucm2_by_hand():
  # H=1, W=2; one contour of strength 0.6 between the pixels, repeated on the frame as in BSDS files.
  ucm2 = np.array([[0, 0, .6, 0, 0],
                   [0, 0, .6, 0, 0],
                   [0, 0, .6, 0, 0]])
  low, high, again = region.segmentations_from_ucm2(ucm2, [0.5, 0.7, 0.8])
  assert low.shape == (1, 2) and low[0, 0] != low[0, 1]
  assert high[0, 0] == high[0, 1]
  assert again is high  # no level between 0.7 and 0.8: the same segmentation, scored once
  with pytest.raises(ValueError, match="ucm2"):
    region.segmentations_from_ucm2(np.zeros((2, 5)), [0.5])


def test_collect_by_hand():
  t = np.array([1.0, 2.0])
  a = region.RegionCounts(t, np.array([5., 8.]), np.array([10., 10.]), np.array([4., 4.]), np.array([5., 5.]), 9.0,
                          np.array([0.7, 0.8]), np.array([2.0, 1.0]))
  b = region.RegionCounts(t, np.array([6., 2.]), np.array([10., 10.]), np.array([1., 2.]), np.array([5., 5.]), 7.0,
                          np.array([0.9, 0.6]), np.array([1.5, 1.8]))
  res = region.collect_region_counts([a, b])
  np.testing.assert_allclose(res.covering, [11 / 20, 10 / 20])
  assert res.covering_ods_threshold == 1.0 and res.covering_ods == pytest.approx(0.55)
  assert res.covering_ois == pytest.approx((8 + 6) / 20)
  assert res.covering_best == pytest.approx(16 / 20)
  np.testing.assert_allclose(res.covering_per_image, [[2.0, 0.8, 0.8], [1.0, 0.6, 0.2]])
  assert res.pri_ods == pytest.approx(0.8) and res.pri_ods_threshold == 1.0
  assert res.pri_ois == pytest.approx(0.85)
  assert res.voi_ods == pytest.approx(1.4) and res.voi_ods_threshold == 2.0
  assert res.voi_ois == pytest.approx(1.25)
  acc = region.RegionBenchmark()
  acc.add(a)
  acc.add(b)
  assert acc.result().covering_ois == res.covering_ois


@functools.cache
def _dataset_result(root, kind):
  counts = []
  for i in IDS:
    truths = bsds_io.load_ground_truth(root / "groundTruth" / f"{i}.mat").segmentations
    if kind == "ucm2":
      ucm2 = bsds_io.load_prediction(root / "ucm2" / f"{i}.mat", "ucm2").data
      counts.append(region.region_counts_from_ucm2(ucm2, truths, num_thresholds=5))
    else:
      segs = bsds_io.load_prediction(root / "segs" / f"{i}.mat", "segs").data
      counts.append(region.region_counts_from_segmentations(segs, truths))
  return region.collect_region_counts(counts)


@pytest.mark.parametrize("test_dir, kind", [("test_1", "ucm2"), ("test_4", "segs"), ("test_5", "segs")])
def test_official_region_outputs(bench, test_dir, kind):
  root = bench
  res = _dataset_result(root, kind)
  s = list(res.summary().values())
  load = lambda name: np.loadtxt(root / test_dir / name, ndmin=2)
  tol = dict(rtol=0, atol=1e-4)
  np.testing.assert_allclose([s[:4]], load("eval_cover.txt"), **tol)
  np.testing.assert_allclose(np.c_[res.thresholds, res.covering], load("eval_cover_th.txt"), **tol)
  img = load("eval_cover_img.txt")
  np.testing.assert_array_equal(img[:, 0], np.arange(1, 6))
  np.testing.assert_allclose(res.covering_per_image, img[:, 1:], **tol)
  np.testing.assert_allclose([s[4:]], load("eval_RI_VOI.txt"), **tol)
  np.testing.assert_allclose(np.c_[res.thresholds, res.pri, res.voi], load("eval_RI_VOI_thr.txt"), **tol)
