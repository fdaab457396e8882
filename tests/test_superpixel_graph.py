"""jhseg.hierarchy.superpixel_graph: DEL's Algorithm 1 vs the single-linkage UCM cut."""
import numpy as np
import pytest

from jhseg import hierarchy
from jhseg.hierarchy import superpixel_graph as sg


def _random_partition(rng, height=9, width=11, cells=3):
  """Superpixels: blocks of a jittered grid (connected by construction)."""
  rows = np.minimum(np.arange(height) // cells, height // cells)
  cols = np.minimum(np.arange(width) // cells, width // cells)
  labels = rows[:, None] * (width // cells + 1) + cols[None, :]
  # random relabelling keeps regions, changes the pair order
  perm = rng.permutation(labels.max() + 1)
  return perm[labels]


def _pairs(labels):
  keys = set()
  for a, b in [(labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])]:
    for u, w in zip(a.ravel(), b.ravel()):
      if u != w:
        keys.add((min(u, w), max(u, w)))
  return np.array(sorted(keys))


def _same_partition(a, b):
  a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
  return len(set(zip(a, b))) == len(set(a)) == len(set(b))


def test_hand_example():
  labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]])
  pairs = np.array([[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
  f = np.array([.2, .5, .7, .1, .9])
  np.testing.assert_array_equal(sg.merge_superpixels(4, pairs, f, threshold=.3), [0, 0, 1, 0])
  np.testing.assert_array_equal(sg.merge_superpixels(4, pairs, f, threshold=.2), [0, 0, 1, 0])
  np.testing.assert_array_equal(sg.merge_superpixels(4, pairs, f, threshold=.1), [0, 1, 2, 1])
  # min_size 2 after {0} {1,3} {2}: pair (0, 1) joins the single 0 into {0,1,3}, then (0, 2)
  # the single 2: everything. Reordered pairs (2, 3) first: {2,1,3}, then (0, 1): the same.
  np.testing.assert_array_equal(
      sg.merge_superpixels(4, pairs, f, threshold=.1, min_size=2), [0, 0, 0, 0])
  # with min_size 2 but only pairs (1, 3), (0, 2) visited: {0, 2} and {1, 3}
  np.testing.assert_array_equal(
      sg.merge_superpixels(4, pairs[[3, 1]], f[[3, 1]], threshold=.1, min_size=2), [0, 1, 0, 1])
  h, v = sg.ucm_from_superpixel_graph(labels, pairs, f)
  # single linkage: 1-3 at .1, {1,3}-0 at .2, then 2 at .5
  np.testing.assert_allclose(h, [[0, .2], [0, .5], [.5, 0]])
  np.testing.assert_allclose(v, [[.5, .5, 0], [0, .5, .1]])
  assert hierarchy.is_ultrametric(h, v)


@pytest.mark.parametrize("seed", range(6))
def test_algorithm1_equals_ucm_cut_on_random_graphs(seed):
  rng = np.random.default_rng(seed)
  labels = _random_partition(rng)
  n = labels.max() + 1
  pairs = _pairs(labels)
  pairs = pairs[rng.permutation(len(pairs))]
  f = np.round(rng.random(len(pairs)), 2)  # ties on purpose
  h, v = sg.ucm_from_superpixel_graph(labels, pairs, f)
  for threshold in np.concatenate([[0, 1], rng.random(5), f[:3]]):
    merged = sg.merge_superpixels(n, pairs, f, threshold=threshold)
    cut = hierarchy.cut_at_threshold(h, v, threshold)
    assert _same_partition(merged[labels], cut)
    for min_size in (2, 4):
      full = sg.merge_superpixels(n, pairs, f, threshold=threshold, min_size=min_size)
      cut_components = np.zeros(n, int)
      cut_components[labels.ravel()] = cut.ravel()
      again = sg.merge_small_components(cut_components, pairs, min_size=min_size)
      np.testing.assert_array_equal(full, again)


def test_padding_mask_disconnected_graph_and_linkages():
  labels = np.array([[0, 1, -1], [2, 3, -1]])
  pairs = np.array([[0, 1], [2, 3], [0, 2], [9, 9]])
  f = np.array([.1, .2, .3, 5.0])
  mask = np.array([True, True, False, False])  # 0-2 dropped: graph {0,1} {2,3}
  h, v = sg.ucm_from_superpixel_graph(labels, pairs, f, mask=mask, num_superpixels=4)
  np.testing.assert_allclose(h, [[.1, 0], [.2, 0]])
  np.testing.assert_allclose(v, [[1.2, 1.2, 0]])  # joined at 1 + max at the top
  for linkage in sg.SUPERPIXEL_LINKAGES:
    sg.ucm_from_superpixel_graph(labels, pairs[:3], f[:3], linkage=linkage)
  with pytest.raises(ValueError, match="valid names"):
    sg.ucm_from_superpixel_graph(labels, pairs[:3], f[:3], linkage="ward")
  with pytest.raises(ValueError, match="outside"):
    sg.merge_superpixels(3, pairs[:3], f[:3], threshold=.5)


def test_average_and_complete_linkage_values():
  # path 0 - 1 - 2 with f01 = .1, f12 = .4, f02 = .6 (triangle)
  labels = np.array([[0, 1], [2, 2]])
  pairs = np.array([[0, 1], [1, 2], [0, 2]])
  f = np.array([.1, .4, .6])
  for linkage, top in (("single", .4), ("average", .5), ("complete", .6)):
    h, v = sg.ucm_from_superpixel_graph(labels, pairs, f, linkage=linkage)
    np.testing.assert_allclose(h, [[.1], [0]], err_msg=linkage)
    np.testing.assert_allclose(v, [[top, top]], err_msg=linkage)


def _algorithm1_reference(n, pairs, f, threshold, min_size):
  """Algorithm 1 pair by pair, as the authors' segment-graph loop (plain union-find)."""
  parent, size = list(range(n)), [1] * n

  def find(x):
    while parent[x] != x:
      x = parent[x]
    return x

  for (i, j), fij in zip(pairs.tolist(), f.tolist()):
    a, b = find(i), find(j)
    if a != b and fij <= threshold:
      parent[a] = b
      size[b] += size[a]
  for i, j in pairs.tolist():
    a, b = find(i), find(j)
    if a != b and (size[a] < min_size or size[b] < min_size):
      parent[a] = b
      size[b] += size[a]
  return np.array([find(i) for i in range(n)])


@pytest.mark.parametrize("seed", range(4))
def test_fast_passes_equal_the_pair_by_pair_loop(seed):
  # merge_superpixels computes the first pass as connected components and loops only over
  # pairs touching a small component; the result must be the sequential loop's.
  rng = np.random.default_rng(100 + seed)
  n = 60
  pairs = rng.integers(0, n, size=(150, 2))
  pairs = pairs[pairs[:, 0] != pairs[:, 1]]
  f = np.round(rng.random(len(pairs)), 1)
  for threshold in (0.0, 0.15, 0.35, 0.6):
    for min_size in (0, 2, 3, 7):
      expected = _algorithm1_reference(n, pairs, f, threshold, min_size)
      got = sg.merge_superpixels(n, pairs, f, threshold=threshold, min_size=min_size)
      assert _same_partition(got, expected), (threshold, min_size)
      assert got[0] == 0 and np.all(np.diff(np.maximum.accumulate(got)) <= 1)  # numbered


def test_ucm_equals_lca_per_pixel_edge_with_incomplete_pairs():
  # Pixel-edge values come from a per-pair lookup; a reference queries the LCA per edge.
  import higra as hg
  rng = np.random.default_rng(7)
  labels = _random_partition(rng, height=12, width=14, cells=2)
  labels[0, :3] = -1  # padding pixels
  n = labels.max() + 1
  pairs = _pairs(np.where(labels < 0, labels.max() + 1, labels))
  pairs = pairs[(pairs < n).all(axis=1)]
  f = rng.random(len(pairs))
  keep = rng.random(len(pairs)) < 0.8  # some adjacent pairs missing from the graph
  keep[:2] = True
  h, v = sg.ucm_from_superpixel_graph(labels, pairs, f, mask=keep, num_superpixels=n)
  tree, altitudes = sg.superpixel_hierarchy(n, pairs, f, mask=keep)
  lca = hg.make_lca_fast(tree)
  for (a, b), got in (((labels[:, :-1], labels[:, 1:]), h), ((labels[:-1], labels[1:]), v)):
    expected = np.zeros(a.shape)
    edge = (a != b) & (a >= 0) & (b >= 0)
    expected[edge] = altitudes[lca.lca(a[edge].astype(np.int64), b[edge].astype(np.int64))]
    np.testing.assert_allclose(got, expected)
    assert np.all(got[~edge] == 0)


def test_boundary_edges_hand_example_and_reuse():
  labels = np.array([[0, 0, 1], [2, 2, 1], [2, 3, 3]])
  edges = sg.boundary_edges(labels)
  # h (3, 2): (0,0)|(0,1) no, (0,1)|(1) yes, (2,2) no, (2,1) yes, (2,3) yes, (3,3) no;
  # v (2, 3) after the 6 h entries: 0/2 yes, 0/2 yes, 1/1 no, 2/2 no, 2/3 yes, 1/3 yes.
  np.testing.assert_array_equal(edges.index, [1, 3, 4, 6, 7, 10, 11])
  np.testing.assert_array_equal(np.stack([edges.low, edges.high], 1),
                                [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
  np.testing.assert_array_equal(edges.pair_of_edge, [0, 2, 4, 1, 1, 4, 3])
  pairs = np.array([[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]])
  f = np.array([.2, .5, .7, .1, .9])
  for got, expected in zip(sg.ucm_from_superpixel_graph(labels, pairs, f, edges=edges),
                           sg.ucm_from_superpixel_graph(labels, pairs, f)):
    np.testing.assert_array_equal(got, expected)
  with pytest.raises(ValueError, match="`edges` is of a"):
    sg.ucm_from_superpixel_graph(labels[:2], pairs, f, edges=edges)
