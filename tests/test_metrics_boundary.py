"""BSDS boundary benchmark: thinning, seg2bdry, matching, reductions, official outputs."""
import functools

import numpy as np
import pytest

from jhseg.hierarchy import matching
from jhseg.metrics import boundary
from jhseg.metrics import bsds_io

IDS = ("2018", "3063", "5096", "6046", "8068")


# ----------------------------------------------------------------------------- hand-built cases


def test_thresholds_are_the_official_linspace():
  np.testing.assert_allclose(boundary.bsds_thresholds(5), [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
  np.testing.assert_allclose(boundary.bsds_thresholds(1), [0.5])
  assert len(boundary.bsds_thresholds()) == 99
  with pytest.raises(ValueError, match="num_thresholds"):
    boundary.bsds_thresholds(0)


def test_boundaries_from_segmentation_by_hand():
  seg = np.array([[1, 1, 2],
                  [1, 1, 2],
                  [3, 3, 3]])
  # Pixel (i, j) is the corner below-right of it: on if one of the 4 edgels there separates labels;
  # last row: horizontal edgels only, last column: vertical ones only, last corner off.
  expected = np.array([[0, 1, 0],
                       [1, 1, 1],
                       [0, 0, 0]], bool)
  np.testing.assert_array_equal(boundary.boundaries_from_segmentation(seg), expected)
  assert not boundary.boundaries_from_segmentation(np.ones((4, 5), int)).any()


def test_thin_keeps_one_pixel_lines_and_thins_thick_bars():
  line = np.zeros((7, 9), bool)
  line[3, 1:8] = True
  np.testing.assert_array_equal(boundary.thin(line), line)
  bar = np.zeros((9, 15), bool)
  bar[3:6, 2:13] = True  # three pixels thick
  thinned = boundary.thin(bar)
  assert (thinned <= bar).all()
  assert thinned[:, 5:10].sum(axis=0).tolist() == [1] * 5  # one pixel thick in the middle
  np.testing.assert_array_equal(boundary.thin(thinned), thinned)  # idempotent
  assert boundary.thin(np.ones((1, 1), bool)).all()  # an isolated pixel survives


def test_thin_preserves_holes_and_components():
  ring = np.zeros((12, 12), bool)
  ring[2:10, 2:10] = True
  ring[5:7, 5:7] = False
  thinned = boundary.thin(ring)
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  _, num_fg = ndimage.label(thinned, structure=np.ones((3, 3)))
  _, num_bg = ndimage.label(~thinned)
  assert num_fg == 1 and num_bg == 2  # still one 8-connected curve around one hole
  assert thinned.sum() < ring.sum()


@pytest.mark.parametrize("matcher", sorted(matching.MATCHERS))
def test_matching_of_identical_and_distant_maps(matcher):
  a = np.zeros((40, 60), bool)
  a[10, 5:50] = True
  match = lambda x, y, **kw: matching.match_boundary_pixels(x, y, matcher=matcher, **kw)
  mm, mt = match(a, a)
  np.testing.assert_array_equal(mm, a)
  np.testing.assert_array_equal(mt, a)
  # 0.0075 * diag(40, 60) = 0.54 px: a one-pixel shift is out of reach ...
  shifted = np.roll(a, 1, axis=0)
  mm, mt = match(a, shifted)
  assert not mm.any() and not mt.any()
  # ... but within reach at 0.02 * diag = 1.44 px.
  mm, mt = match(a, shifted, max_distance=0.02)
  np.testing.assert_array_equal(mm, a)
  np.testing.assert_array_equal(mt, shifted)
  with pytest.raises(ValueError, match="same shape"):
    match(a, a[:-1])
  assert not any(m.any() for m in match(np.zeros_like(a), a))


@pytest.mark.parametrize("matcher", sorted(matching.MATCHERS))
def test_matching_is_one_to_one_and_prefers_short_pairs(matcher):
  machine = np.zeros((30, 30), bool)
  machine[15, 10:20] = True
  truth = np.zeros((30, 30), bool)
  truth[15, 10:15] = True  # half as many human pixels
  mm, mt = matching.match_boundary_pixels(machine, truth, max_distance=0.1, matcher=matcher)
  assert mm.sum() == mt.sum() == 5
  # Each human pixel has its coincident machine pixel: the zero-cost matching is the unique optimum.
  np.testing.assert_array_equal(mm, truth)
  with pytest.raises(ValueError, match="valid matchers"):
    matching.match_boundary_pixels(machine, truth, matcher="hungarian")


def test_official_cost_model_can_prefer_one_match_less():
  """A long chain shifted by one pixel: correspondPixels' objective drops one match, Higra does not.

  Machine pixels x = 0..199, human pixels x = 1..200 on one row, r = 1.2 px. All 200 can be matched
  by shifting every pair by one pixel (cost 200 * rint(100 * 1) = 20000, plus ow * (400 - 200));
  matching the 199 coincident pixels costs 0 + ow * (400 - 199) with ow = ceil(100 * 100 * 1.2)
  = 12000: cheaper by 20000 - 12000. Max-cardinality matching (Higra) keeps all 200.
  """
  machine = np.zeros((1, 201), bool)
  machine[0, :200] = True
  truth = np.zeros((1, 201), bool)
  truth[0, 1:] = True
  max_distance = 1.2 / np.hypot(1, 201)
  mm, mt = matching.match_boundary_pixels(machine, truth, max_distance=max_distance, matcher="bsds")
  np.testing.assert_array_equal(mm, machine & truth)
  np.testing.assert_array_equal(mt, machine & truth)
  mm, mt = matching.match_boundary_pixels(machine, truth, max_distance=max_distance, matcher="higra")
  np.testing.assert_array_equal(mm, machine)
  np.testing.assert_array_equal(mt, truth)


def test_matchable_pairs_by_hand():
  machine = np.zeros((5, 5), bool)
  machine[2, 2] = True
  truth = np.zeros((5, 5), bool)
  truth[2, 3] = truth[4, 4] = truth[0, 2] = True
  m, t, d = matching.matchable_pairs(machine, truth, 2.0)  # (4, 4) is sqrt(8) > 2 away
  assert m.tolist() == [12, 12]
  assert sorted(zip(t.tolist(), d.tolist())) == [(2, 2.0), (13, 1.0)]


def test_counts_of_a_perfect_map():
  truth = np.zeros((20, 30), bool)
  truth[5, 3:25] = True
  truth2 = np.zeros((20, 30), bool)
  truth2[12, 3:25] = True
  pb = truth * 0.7  # on at thresholds <= 0.7 only
  c = boundary.counts_from_soft_map(pb, [truth, truth2], num_thresholds=3)  # 0.25, 0.5, 0.75
  np.testing.assert_array_equal(c.cnt_r, [22, 22, 0])
  np.testing.assert_array_equal(c.sum_r, [44, 44, 44])
  np.testing.assert_array_equal(c.cnt_p, [22, 22, 0])
  np.testing.assert_array_equal(c.sum_p, [22, 22, 0])


def test_interpolated_max_f_by_hand():
  # F = 0.5 at the middle threshold and never larger along the segments: ties keep the earliest point.
  assert boundary.interpolated_max_f([0.25, 0.5, 0.75], [1, 0.5, 0], [0, 0.5, 1]) == pytest.approx((0.5, 0.5, 0.5, 0.5))
  # An interior optimum: (r, p) = (1 - d, 0.5 + 0.5 d) for d in linspace(0, 1, 100).
  d = np.linspace(0, 1, 100)
  r, p = 1 - d, 0.5 + 0.5 * d
  f = 2 * p * r / (p + r)
  k = int(np.argmax(f))
  assert 0 < k < 99
  assert boundary.interpolated_max_f([0, 1], [1, 0], [0.5, 1]) == pytest.approx((d[k], r[k], p[k], f[k]))


def test_average_precision_by_hand():
  assert boundary.average_precision([0, 1], [1, 0]) == pytest.approx(0.505)  # sum_k (1 - k/100) / 100
  # Repeated recall 0.5: the last precision (0.6) is kept, as MATLAB's legacy `unique`:
  # sum_{k<=50} (1 - 0.008 k) + sum_{k>50} (0.6 - 0.012 (k - 50)) = 40.8 + 14.7.
  assert boundary.average_precision([0, 0.5, 0.5, 1], [1, 0.2, 0.6, 0]) == pytest.approx(0.555)
  assert boundary.average_precision([0.3, 0.3], [1, 1]) == 0.0


def test_collect_by_hand():
  t = np.array([0.25, 0.5])
  a = boundary.BoundaryCounts(t, np.array([8, 4]), np.array([10, 10]), np.array([4, 4]), np.array([8, 4]))
  b = boundary.BoundaryCounts(t, np.array([1, 1]), np.array([10, 10]), np.array([2, 1]), np.array([4, 1]))
  res = boundary.collect_boundary_counts([a, b])
  np.testing.assert_allclose(res.recall, [9 / 20, 5 / 20])
  np.testing.assert_allclose(res.precision, [6 / 12, 5 / 5])
  # OIS: image a is best at t=0.25 (F 0.615 vs 0.571), image b at t=0.5 (F 0.167 vs 0.154).
  assert res.ois_recall == pytest.approx(9 / 20)
  assert res.ois_precision == pytest.approx(5 / 9)
  with pytest.raises(ValueError, match="thresholds"):
    boundary.collect_boundary_counts([a, boundary.BoundaryCounts(t[:1], *(np.ones(1),) * 4)])
  acc = boundary.BoundaryBenchmark()
  acc.add(a)
  acc.add(b)
  assert acc.result().ods_f == res.ods_f


# ----------------------------------------------------------------------------- official sample


@functools.cache
def _ground_truth(root):
  return {i: bsds_io.load_ground_truth(root / "groundTruth" / f"{i}.mat") for i in IDS}


@functools.cache
def _dataset_result(root, kind, matcher):
  gts = _ground_truth(root)
  counts = []
  for i in IDS:
    truths = gts[i].boundaries
    if kind == "ucm2":
      pred = bsds_io.load_prediction(root / "ucm2" / f"{i}.mat", "ucm2")
      counts.append(boundary.counts_from_ucm2(pred.data, truths, num_thresholds=5, matcher=matcher))
    elif kind == "png":
      pred = bsds_io.load_prediction(root / "png" / f"{i}.png", "png")
      counts.append(boundary.counts_from_soft_map(pred.data, truths, num_thresholds=5, matcher=matcher))
    else:
      pred = bsds_io.load_prediction(root / "segs" / f"{i}.mat", "segs")
      counts.append(boundary.counts_from_segmentations(pred.data, truths, matcher=matcher))
  return boundary.collect_boundary_counts(counts)



def test_release_boundaries_are_thinned_seg2bdry(bench):
  """Independent check of `boundaries_from_segmentation` and `thin`: the release's own Boundaries."""
  for i, gt in _ground_truth(bench).items():
    for k, (seg, bdry) in enumerate(zip(gt.segmentations, gt.boundaries)):
      thinned = boundary.thin(boundary.boundaries_from_segmentation(seg))
      assert (thinned == bdry).all(), f"image {i} annotator {k + 1}"


@pytest.mark.parametrize("test_dir, kind, matcher", [
    ("test_1", "ucm2", "bsds"), ("test_2", "png", "bsds"), ("test_3", "segs", "bsds"), ("test_4", "segs", "bsds"),
    ("test_1", "ucm2", "higra")])
def test_official_boundary_outputs(bench, test_dir, kind, matcher):
  res = _dataset_result(bench, kind, matcher)
  ref = np.loadtxt(bench / test_dir / "eval_bdry.txt")
  mine = list(res.summary().values())
  np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-3)
  ref_thr = np.loadtxt(bench / test_dir / "eval_bdry_thr.txt")
  np.testing.assert_allclose(np.c_[res.thresholds, res.recall, res.precision, res.f], ref_thr, rtol=0, atol=1e-3)
  ref_img = np.loadtxt(bench / test_dir / "eval_bdry_img.txt")
  np.testing.assert_array_equal(ref_img[:, 0], np.arange(1, 6))
  np.testing.assert_allclose(res.per_image[:, 0], ref_img[:, 1], rtol=0, atol=1e-5)  # same best thresholds
  # Per image, the official matcher's own run-to-run noise exceeds 1e-3: test_1..test_4 thin to the same
  # binary maps, yet their recalls of image 2 span 0.595908..0.596991 (1.1e-3). Hence 1.5e-3 here.
  np.testing.assert_allclose(res.per_image[:, 1:], ref_img[:, 2:], rtol=0, atol=1.5e-3)


@pytest.mark.parametrize("matcher", sorted(matching.MATCHERS))
def test_reuse_equals_naive_loop(bench, matcher):
  gt = _ground_truth(bench)["5096"]
  ucm2 = bsds_io.load_prediction(bench / "ucm2" / "5096.mat", "ucm2").data
  fast = boundary.counts_from_ucm2(ucm2, gt.boundaries, num_thresholds=7, matcher=matcher)
  naive = boundary.counts_from_ucm2(ucm2, gt.boundaries, num_thresholds=7, reuse_identical=False, matcher=matcher)
  for field in ("cnt_r", "sum_r", "cnt_p", "sum_p"):
    np.testing.assert_array_equal(getattr(fast, field), getattr(naive, field))


def test_matchers_agree_on_the_number_of_matches(bench):
  """Both matchers are exact; on real maps the official cost model keeps every possible match."""
  gt = _ground_truth(bench)["3063"]
  ucm2 = bsds_io.load_prediction(bench / "ucm2" / "3063.mat", "ucm2").data
  thinned = boundary.thin(ucm2[2::2, 2::2] >= 0.1)
  for truth in gt.boundaries:
    mm_b, mt_b = matching.match_boundary_pixels(thinned, truth, matcher="bsds")
    mm_h, mt_h = matching.match_boundary_pixels(thinned, truth, matcher="higra")
    assert mt_b.sum() == mt_h.sum() == mm_b.sum() == mm_h.sum()
    assert (mm_b <= thinned).all() and (mt_b <= truth).all()
