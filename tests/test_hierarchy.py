"""jhseg.hierarchy (NumPy, one image): hand-built tiny images with hand-computed answers,
independent references (naive average linkage, Higra's own area filter), round trips."""
import itertools

import higra as hg
import numpy as np
import pytest

from jhseg import grid
from jhseg import hierarchy as hy

FINE = np.array([[0, 1, 2], [3, 3, 2]], np.int32)
COARSE = np.array([[0, 0, 1], [0, 0, 1]], np.int32)


def _quadrants_4x4():
  """4x4 dissimilarity with zero plateaus R1 = cols 0-1 (8 px), R2 = rows 0-1 x cols 2-3
  (4 px), R3 = row 2 x cols 2-3 (2 px), R4 = row 3 x cols 2-3 (2 px).

  Boundaries (pixel edges -> mean, length): R1|R2 h[0,1]=.2, h[1,1]=.4 -> .3 (2);
  R1|R3 h[2,1]=.6 (1); R1|R4 h[3,1]=1 (1); R2|R3 v[1,2]=.5, v[1,3]=.9 -> .7 (2);
  R3|R4 v[2,2]=.1, v[2,3]=.3 -> .2 (2).
  Average linkage: R3+R4 at .2 (S); then R1|S = .8, R2|S = .7, R1|R2 = .3 -> R1+R2 at .3 (T);
  T|S = (.6 + 1 + .5 + .9) / 4 = .75 (boundary-length weighted; the unweighted mean of the
  three RAG edges would be .7667).
  """
  h = np.zeros((4, 3))
  v = np.zeros((3, 4))
  h[0, 1], h[1, 1], h[2, 1], h[3, 1] = .2, .4, .6, 1.
  v[1, 2], v[1, 3], v[2, 2], v[2, 3] = .5, .9, .1, .3
  return h, v


def _expected_quadrant_ucm(r1r2, r3r4, top):
  h = np.zeros((4, 3))
  v = np.zeros((3, 4))
  h[0:2, 1] = r1r2
  h[2:4, 1] = top
  v[1, 2:4] = top
  v[2, 2:4] = r3r4
  return h, v


def test_watershed_superpixels_by_hand():
  h, v = _quadrants_4x4()
  expected = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]])
  labels = hy.watershed_superpixels(h, v)
  np.testing.assert_array_equal(labels, expected)
  assert labels.dtype == np.int32
  # 1 x 4: minima {0, 1} and {2, 3} separated by the heavy middle edge
  np.testing.assert_array_equal(
      hy.watershed_superpixels(np.array([[0., 5., 0.]]), np.zeros((0, 4))), [[0, 0, 1, 1]])


@pytest.mark.parametrize("min_area, expected", [
    (0, (.3, .2, .75)),
    (2, (.3, .2, .75)),   # no region below 2 px
    (3, (.3, 0., .75)),   # R3, R4 (2 px each) merged; R2 (4 px) kept
    (4, (.3, 0., .75)),   # area < 4 removed, R2 has exactly 4
    (5, (0., 0., 0.)),    # R2 (4 px) and S (4 px) are too small: one region
])
def test_ucm_from_dissimilarity_by_hand(min_area, expected):
  h, v = _quadrants_4x4()
  got_h, got_v = hy.ucm_from_dissimilarity(h, v, min_region_area=min_area)
  want_h, want_v = _expected_quadrant_ucm(*expected)
  np.testing.assert_allclose(got_h, want_h, atol=1e-12)
  np.testing.assert_allclose(got_v, want_v, atol=1e-12)


def test_ucm_keeps_float32():
  h, v = _quadrants_4x4()
  got_h, got_v = hy.ucm_from_dissimilarity(h.astype(np.float32), v.astype(np.float32))
  assert got_h.dtype == np.float32 and got_v.dtype == np.float32


def _naive_average_linkage_ucm(h, v, labels):
  """Independent reference: agglomerate superpixels by the mean pixel-edge dissimilarity
  along their whole common boundary; an edge's UCM value is the altitude at which its two
  endpoints first share a cluster."""
  height, width = labels.shape
  edges = [((i, j), (i, j + 1), h[i, j]) for i in range(height) for j in range(width - 1)]
  edges += [((i, j), (i + 1, j), v[i, j]) for i in range(height - 1) for j in range(width)]
  cluster = {l: {l} for l in np.unique(labels)}
  owner = {l: l for l in cluster}
  merged_at = {}
  while len(cluster) > 1:
    sums = {}
    for p, q, w in edges:
      a, b = owner[labels[p]], owner[labels[q]]
      if a != b:
        key = (min(a, b), max(a, b))
        s, n = sums.get(key, (0., 0))
        sums[key] = (s + w, n + 1)
    (a, b), (s, n) = min(sums.items(), key=lambda kv: kv[1][0] / kv[1][1])
    for la, lb in itertools.product(cluster[a], cluster[b]):
      merged_at[frozenset((la, lb))] = s / n
    cluster[a] |= cluster.pop(b)
    for l in cluster[a]:
      owner[l] = a
  out_h, out_v = np.zeros_like(h), np.zeros_like(v)
  for p, q, _ in edges:
    value = 0. if labels[p] == labels[q] else merged_at[frozenset((labels[p], labels[q]))]
    if q[0] == p[0]:
      out_h[p] = value
    else:
      out_v[p] = value
  return out_h, out_v


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ucm_matches_naive_average_linkage(seed):
  rng = np.random.default_rng(seed)
  h, v = rng.random((6, 6)), rng.random((5, 7))
  labels = hy.watershed_superpixels(h, v)
  assert labels.max() >= 3  # a non-trivial hierarchy
  want_h, want_v = _naive_average_linkage_ucm(h, v, labels)
  got_h, got_v = hy.ucm_from_dissimilarity(h, v, min_region_area=0)
  np.testing.assert_allclose(got_h, want_h, rtol=1e-12)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_ucm_area_filter_invariants(seed):
  rng = np.random.default_rng(seed)
  h, v = rng.random((9, 10)), rng.random((8, 11))
  raw = hy.ucm_from_dissimilarity(h, v, min_region_area=0)
  filtered = hy.ucm_from_dissimilarity(h, v, min_region_area=6)
  assert hy.is_ultrametric(*raw) and hy.is_ultrametric(*filtered)
  # removing frontiers only lowers the saliency
  assert np.all(filtered[0] <= raw[0]) and np.all(filtered[1] <= raw[1])
  assert (filtered[0] < raw[0]).any() or (filtered[1] < raw[1]).any()
  # every region at every level has >= 6 pixels
  for t in np.unique(np.concatenate([filtered[0].ravel(), filtered[1].ravel()])):
    sizes = np.bincount(hy.cut_at_threshold(*filtered, t).ravel())
    assert sizes.min() >= 6, (t, sizes)


def test_ucm_errors():
  h, v = _quadrants_4x4()
  with pytest.raises(ValueError, match=r"valid names: \['average'\]"):
    hy.ucm_from_dissimilarity(h, v, linkage="ward")
  with pytest.raises(ValueError, match=r"`v` must have shape \(\.\.\., H-1, W\) = \(3, 4\)"):
    hy.ucm_from_dissimilarity(h, v.T)
  with pytest.raises(ValueError, match=r"`h` must have shape \(H, W-1\) for one image"):
    hy.ucm_from_dissimilarity(h[None], v[None])
  with pytest.raises(ValueError, match=">= 0"):
    hy.ucm_from_dissimilarity(-h, v)
  with pytest.raises(ValueError, match="finite"):
    hy.ucm_from_dissimilarity(h * np.nan, v)


def test_constant_dissimilarity_gives_empty_ucm():
  h, v = hy.ucm_from_dissimilarity(np.ones((3, 2)), np.ones((2, 3)))
  assert not h.any() and not v.any()


def test_filter_small_regions_matches_higra():
  """Independent reference: Higra's filter_small_nodes_from_tree on the canonical BPT."""
  rng = np.random.default_rng(3)
  h, v = rng.random((7, 8)), rng.random((6, 9))
  graph = hg.get_4_adjacency_graph((7, 9))
  perm = grid.flat_edge_permutation((7, 9))  # NumPy, float64 (jnp would be float32)
  w = np.concatenate([h.ravel(), v.ravel()])[perm]
  tree, altitudes = hg.bpt_canonical(graph, w)
  tree, altitudes = hg.filter_small_nodes_from_tree(tree, altitudes, 5, leaf_graph=graph)
  want = hg.saliency(tree, altitudes, leaf_graph=graph)
  got_h, got_v = hy.filter_small_regions(h, v, min_area=5)
  np.testing.assert_array_equal(np.concatenate([got_h.ravel(), got_v.ravel()])[perm], want)
  assert (want > 0).sum() < (w > 0).sum()  # the filter did remove frontiers


def test_filter_small_regions_on_ultrametric_by_hand():
  # objects {left 2 columns, right column} and a 1-pixel part at (0, 0)
  parts = np.array([[0, 1, 2], [1, 1, 2], [1, 1, 2]])
  objects = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]])
  h, v = hy.ultrametric_from_nested_segmentations([parts, objects], [0.5, 1.0])
  np.testing.assert_allclose(h[0], [0.5, 1.0])
  got_h, got_v = hy.filter_small_regions(h, v, min_area=2)
  want_h, want_v = hy.ultrametric_from_nested_segmentations([objects, objects + 0], [0.5, 1.0])
  np.testing.assert_array_equal(got_h, want_h)  # part boundary gone, object boundary kept
  np.testing.assert_array_equal(got_v, want_v)
  # min_area = 4: the right object (3 px) merges too
  got_h, got_v = hy.filter_small_regions(h, v, min_area=4)
  assert not got_h.any() and not got_v.any()


def test_cut_at_threshold_convention():
  h, v = hy.ultrametric_from_nested_segmentations([FINE, COARSE], [0.5, 1.0])
  np.testing.assert_array_equal(hy.cut_at_threshold(h, v, -1), [[0, 1, 2], [3, 4, 5]])
  for t in (0, 0.25, 0.4999):
    np.testing.assert_array_equal(hy.cut_at_threshold(h, v, t), FINE)
  for t in (0.5, 0.9):  # boundaries are the edges with weight > t
    np.testing.assert_array_equal(hy.cut_at_threshold(h, v, t), COARSE)
  np.testing.assert_array_equal(hy.cut_at_threshold(h, v, 1.0), np.zeros((2, 3)))


def test_cut_at_threshold_non_ultrametric_is_connected_components():
  # 1 x 4 with weights 1, 3, 2: at t = 2 the components of {w <= 2} are {0, 1} and {2, 3}
  labels = hy.cut_at_threshold(np.array([[1., 3., 2.]]), np.zeros((0, 4)), 2)
  np.testing.assert_array_equal(labels, [[0, 0, 1, 1]])


@pytest.mark.parametrize("num_regions, expected", [
    (1, np.zeros((2, 3))), (2, COARSE), (3, COARSE), (4, FINE), (6, FINE), (100, FINE)])
def test_cut_with_num_regions(num_regions, expected):
  h, v = hy.ultrametric_from_nested_segmentations([FINE, COARSE], [0.5, 1.0])
  np.testing.assert_array_equal(hy.cut_with_num_regions(h, v, num_regions), expected)


def test_cut_with_num_regions_errors():
  h, v = hy.ultrametric_from_nested_segmentations([FINE, COARSE], [0.5, 1.0])
  with pytest.raises(ValueError, match="`num_regions` must be >= 1"):
    hy.cut_with_num_regions(h, v, 0)


def test_nested_segmentations_round_trip():
  h, v = hy.ultrametric_from_nested_segmentations([FINE, COARSE])  # default altitudes 0.5, 1
  np.testing.assert_allclose(h, [[0.5, 1.0], [0.0, 1.0]])
  np.testing.assert_allclose(v, [[0.5, 0.5, 0.0]])
  assert hy.is_ultrametric(h, v)
  with pytest.raises(ValueError, match="level 0 does not refine level 1"):
    hy.ultrametric_from_nested_segmentations([COARSE, FINE])
  with pytest.raises(ValueError, match="positive increasing"):
    hy.ultrametric_from_nested_segmentations([FINE, COARSE], [1.0, 0.5])


def test_tree_round_trip_by_hand():
  h, v = hy.ultrametric_from_nested_segmentations([FINE, COARSE], [0.5, 1.0])
  tree, altitudes = hy.tree_from_ultrametric(h, v)
  # leaves 0..5; {2,5} and {3,4} at 0; {0,1,3,4} at 0.5; root at 1
  assert tree.num_leaves() == 6 and tree.num_vertices() == 10
  np.testing.assert_array_equal(np.sort(altitudes[6:]), [0, 0, 0.5, 1])
  parents = tree.parents()
  assert parents[2] == parents[5] and parents[3] == parents[4] != parents[2]
  assert altitudes[parents[parents[3]]] == 0.5 and parents[parents[3]] == parents[0] == parents[1]
  h2, v2 = hy.ultrametric_from_tree(tree, altitudes, (2, 3))
  np.testing.assert_array_equal(h2, h)
  np.testing.assert_array_equal(v2, v)


def test_round_trip_edges_ucm_images_tree():
  rng = np.random.default_rng(4)
  h, v = hy.ucm_from_dissimilarity(rng.random((8, 7)), rng.random((7, 8)), min_region_area=4)
  ucm2 = grid.interpixel_to_ucm2(grid.edges_to_interpixel(h, v))
  h2, v2 = grid.interpixel_to_edges(grid.ucm2_to_interpixel(ucm2))
  tree, altitudes = hy.tree_from_ultrametric(np.asarray(h2), np.asarray(v2))
  h3, v3 = hy.ultrametric_from_tree(tree, altitudes, (8, 8))
  np.testing.assert_allclose(h3, h, rtol=1e-6)
  np.testing.assert_allclose(v3, v, rtol=1e-6)


def test_is_ultrametric_by_hand():
  # 2 x 2 cycle: v[0, 1] = 3 but the other path between its ends has max 1
  h, v = np.array([[1.], [1.]]), np.array([[1., 3.]])
  assert not hy.is_ultrametric(h, v)
  assert hy.is_ultrametric(h, np.array([[1., 1.]]))
  # on a path graph every weighting is its own subdominant ultrametric
  assert hy.is_ultrametric(np.array([[1., 3., 2.]]), np.zeros((0, 4)))


def test_tree_errors():
  h, v = np.array([[1.], [1.]]), np.array([[1., 3.]])
  with pytest.raises(ValueError, match="not an ultrametric: 1 edges"):
    hy.tree_from_ultrametric(h, v)
  tree, altitudes = hy.tree_from_ultrametric(h, v, check=False)  # single linkage: v[0, 1] -> 1
  np.testing.assert_array_equal(hy.ultrametric_from_tree(tree, altitudes, (2, 2))[1], [[1., 1.]])
  with pytest.raises(ValueError, match=r"`tree` must have H\*W = 6 leaves"):
    hy.ultrametric_from_tree(tree, altitudes, (2, 3))
  with pytest.raises(ValueError, match="`altitudes` must have shape"):
    hy.ultrametric_from_tree(tree, altitudes[:-1], (2, 2))


def test_numpy_functions_are_thread_safe():
  """Callbacks of several devices run concurrently: same results from 4 threads as serially."""
  from concurrent.futures import ThreadPoolExecutor
  rng = np.random.default_rng(7)
  images = [(rng.random((20, 29)), rng.random((19, 30))) for _ in range(8)]
  serial = [hy.ucm_from_dissimilarity(h, v, min_region_area=5) for h, v in images]
  with ThreadPoolExecutor(4) as pool:
    threaded = list(pool.map(lambda hv: hy.ucm_from_dissimilarity(*hv, min_region_area=5), images))
  for (sh, sv), (th, tv) in zip(serial, threaded):
    np.testing.assert_array_equal(sh, th)
    np.testing.assert_array_equal(sv, tv)


def _same_partition(a, b) -> bool:
  pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1).shape[1]
  return pairs == np.unique(a).size == np.unique(b).size


def test_real_bsds_ucm2_cuts_match_the_benchmark_labelling(shared_data):
  """Real gPb-owt-ucm maps: an ultrametric on our 4-adjacency edges; our cuts equal the BSDS
  code's `bwlabel(ucm2 <= t)` (8-connected) sampled at the pixels; tree round trip exact."""
  import scipy.io
  from scipy import ndimage
  ucm2 = scipy.io.loadmat(shared_data / "bsds500_bench" / "ucm2" / "5096.mat")["ucm2"]
  h, v = ucm2[1:-1:2, 2:-1:2], ucm2[2:-1:2, 1:-1:2]  # float64, straight from the file
  assert hy.is_ultrametric(h, v)
  for t in (0.05, 0.2, 0.4):
    bsds = ndimage.label(ucm2 <= t, structure=np.ones((3, 3)))[0][1::2, 1::2]
    ours = hy.cut_at_threshold(h, v, t)
    assert _same_partition(ours, bsds), t
  tree, altitudes = hy.tree_from_ultrametric(h, v)
  h2, v2 = hy.ultrametric_from_tree(tree, altitudes, (h.shape[0], v.shape[1]))
  np.testing.assert_array_equal(h2, h)
  np.testing.assert_array_equal(v2, v)


def test_apply_per_image():
  rng = np.random.default_rng(9)
  h, v = rng.random((2, 3, 5, 4)), rng.random((2, 3, 4, 5))
  ucm_h, ucm_v = hy.apply_per_image(hy.ucm_from_dissimilarity, h, v, min_region_area=2)
  assert ucm_h.shape == h.shape and ucm_v.shape == v.shape
  want = hy.ucm_from_dissimilarity(h[1, 2], v[1, 2], min_region_area=2)
  np.testing.assert_array_equal(ucm_h[1, 2], want[0])
  np.testing.assert_array_equal(ucm_v[1, 2], want[1])
  labels = hy.apply_per_image(hy.watershed_superpixels, h, v)
  assert labels.shape == (2, 3, 5, 5) and labels.dtype == np.int32
  np.testing.assert_array_equal(labels[0, 1], hy.watershed_superpixels(h[0, 1], v[0, 1]))
  with pytest.raises(ValueError, match="same leading dims"):
    hy.apply_per_image(hy.watershed_superpixels, h, v[:1])
