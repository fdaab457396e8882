"""HSG losses against hand computations, invariances and gradient safety."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.losses import hsg
from jhseg.models.spherical_kmeans import segment_prototypes


def _unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_contrastive(v, seg, protos, labels, kappa, exclude_own=True):
  """Reference L_f over flat arrays with explicit per-pixel loops."""
  v, protos = _unit(v), _unit(protos)
  losses = []
  for i in range(len(v)):
    own = seg[i]
    sims = np.exp(kappa * protos @ v[i])
    pos = [s for s in range(len(protos)) if labels[s] == labels[own]
           and (s != own or not exclude_own)]
    num = sims[pos].sum() if pos else sims[own]
    neg = sims[[s for s in range(len(protos)) if labels[s] != labels[own]]].sum()
    losses.append(-np.log(num / (num + neg)))
  return np.mean(losses)


def test_contrastive_two_pixels_by_hand():
  # Two segments of label 0 (views of one region) and one of label 1; 2-D embeddings.
  v = np.array([[1.0, 0.0], [0.0, 1.0]])
  protos = np.array([[1.0, 0.0], [np.sqrt(0.5), np.sqrt(0.5)], [0.0, 1.0]])
  seg = np.array([0, 2])
  labels = np.array([0, 0, 1])
  kappa = 2.0
  c = np.sqrt(0.5)
  # Pixel 0 (segment 0): positive = segment 1 only (own excluded), negative = segment 2.
  l0 = -np.log(np.exp(2 * c) / (np.exp(2 * c) + np.exp(0.0)))
  # Pixel 1 (segment 2): no other positive -> own segment; negatives = segments 0, 1.
  l1 = -np.log(np.exp(2.0) / (np.exp(2.0) + np.exp(0.0) + np.exp(2 * c)))
  got = hsg.pixel_segment_contrastive_loss(
      jnp.asarray(v[None], jnp.float32), jnp.asarray(seg[None]),
      jnp.asarray(protos[None], jnp.float32), jnp.asarray(labels[None]),
      concentration=kappa)
  np.testing.assert_allclose(float(got), (l0 + l1) / 2, rtol=1e-5)
  # Including the own segment in the positives, pixel 0's numerator gains exp(2).
  l0_incl = -np.log((np.exp(2 * c) + np.exp(2.0)) / (np.exp(2 * c) + np.exp(2.0) + 1.0))
  got = hsg.pixel_segment_contrastive_loss(
      jnp.asarray(v[None], jnp.float32), jnp.asarray(seg[None]),
      jnp.asarray(protos[None], jnp.float32), jnp.asarray(labels[None]),
      concentration=kappa, exclude_own_segment=False)
  np.testing.assert_allclose(float(got), (l0_incl + l1) / 2, rtol=1e-5)


def _random_case(rng, b=2, n=9, s=4, d=3):
  v = rng.normal(size=(b, n, d)).astype(np.float32)
  seg = rng.integers(0, s, size=(b, n))
  protos = rng.normal(size=(b, s, d)).astype(np.float32)
  labels = rng.integers(0, 3, size=(b, s))
  return v, seg, protos, labels


def test_contrastive_matches_reference_across_batch_with_masks():
  rng = np.random.default_rng(0)
  v, seg, protos, labels = _random_case(rng)
  seg_mask = np.ones((2, 4), bool)
  seg_mask[1, 3] = False          # padded segment: never a positive or negative
  pix_mask = np.ones((2, 9), bool)
  pix_mask[0, :2] = False
  seg[1, 0] = -1                  # invalid pixel id
  got = jax.jit(lambda *a: hsg.pixel_segment_contrastive_loss(
      *a[:4], segment_mask=a[4], pixel_mask=a[5], concentration=16.0))(
          v, seg, protos, labels, seg_mask, pix_mask)
  # Flatten to batch-global segments; drop invalid pixels and padded segments.
  keep_seg = seg_mask.reshape(-1)
  new_id = np.cumsum(keep_seg) - 1
  flat_protos = protos.reshape(-1, 3)[keep_seg]
  flat_labels = labels.reshape(-1)[keep_seg]
  vv, ss = [], []
  for bi in range(2):
    for i in range(9):
      g = seg[bi, i] + 4 * bi
      if seg[bi, i] >= 0 and pix_mask[bi, i] and keep_seg[g]:
        vv.append(v[bi, i])
        ss.append(new_id[g])
  want = _np_contrastive(np.array(vv), np.array(ss), flat_protos, flat_labels, 16.0)
  np.testing.assert_allclose(float(got), want, rtol=1e-4)


def test_contrastive_invariant_to_segment_and_label_permutations():
  rng = np.random.default_rng(1)
  v, seg, protos, labels = _random_case(rng, s=5)
  base = hsg.pixel_segment_contrastive_loss(v, seg, protos, labels)
  perm = rng.permutation(5)             # new position p holds old segment perm[p]
  inverse = np.argsort(perm)
  relabel = np.array([7, 3, 11])        # a bijection of the label values
  got = hsg.pixel_segment_contrastive_loss(
      v, inverse[seg], protos[:, perm], relabel[labels[:, perm]])
  np.testing.assert_allclose(float(got), float(base), rtol=1e-5)
  # Permuting pixels changes nothing either; swapping two labels' meaning does.
  pix = rng.permutation(9)
  got = hsg.pixel_segment_contrastive_loss(v[:, pix], seg[:, pix], protos, labels)
  np.testing.assert_allclose(float(got), float(base), rtol=1e-5)


def test_contrastive_gradients_finite_with_empty_and_single_pixel_segments():
  # 5 pixels, 4 segment slots: segment 2 has one pixel, segment 3 is empty.
  rng = np.random.default_rng(2)
  v = jnp.asarray(rng.normal(size=(1, 5, 4)), jnp.float32)
  seg = jnp.asarray([[0, 0, 1, 1, 2]])
  labels = jnp.asarray([[0, 1, 0, 2]])

  def loss(v):
    protos, counts = segment_prototypes(v, seg, 4)
    return hsg.pixel_segment_contrastive_loss(v, seg, protos, labels,
                                              segment_mask=counts > 0)

  value, grad = jax.value_and_grad(loss)(v)
  assert np.isfinite(float(value))
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
  # All pixels invalid: loss 0 and zero gradient, no NaN.
  g0 = jax.grad(lambda v: hsg.pixel_segment_contrastive_loss(
      v, seg, v[:, :4], labels, pixel_mask=jnp.zeros((1, 5), bool)))(v)
  np.testing.assert_array_equal(np.asarray(g0), 0.0)


def test_contrastive_shape_errors():
  with pytest.raises(ValueError, match=r"\(B, N, D\)"):
    hsg.pixel_segment_contrastive_loss(jnp.ones((4, 3)), jnp.zeros((4,), int),
                                       jnp.ones((2, 3)), jnp.zeros((2,), int))
  with pytest.raises(ValueError, match="segment_labels"):
    hsg.pixel_segment_contrastive_loss(jnp.ones((1, 4, 3)), jnp.zeros((1, 4), int),
                                       jnp.ones((1, 2, 3)), jnp.zeros((1, 3), int))


def test_knn_affinity_by_hand():
  angles = np.deg2rad([0.0, 10.0, 30.0, 100.0, 50.0])
  x = np.stack([np.cos(angles), np.sin(angles)], -1)[None].astype(np.float32)
  mask = np.array([[True, True, True, True, False]])
  a = np.asarray(hsg.knn_affinity(x, num_neighbors=1, mask=mask))[0]
  want = np.zeros((5, 5))
  want[0, 1] = want[1, 0] = want[2, 1] = want[3, 2] = 1   # 50 deg node is masked
  np.testing.assert_array_equal(a, want)
  a2 = np.asarray(hsg.knn_affinity(x, num_neighbors=2, mask=mask))[0]
  want2 = np.zeros((5, 5))
  for i, js in {0: (1, 2), 1: (0, 2), 2: (1, 0), 3: (2, 1)}.items():
    want2[i, list(js)] = 1
  np.testing.assert_array_equal(a2, want2)
  # Groups {0, 3} and {1, 2}: k = 1 in *each* group, union (HSG supp. 5.7). Node 0:
  # own group -> 3; group {1, 2} -> 1 (10 deg). Node 1: own group -> 2; other -> 0.
  # Node 2: own -> 1; other -> 0 (30 deg vs 100 deg). Node 3: own -> 0; other -> 2.
  groups = np.array([[0, 1, 1, 0, 0]])
  a3 = np.asarray(hsg.knn_affinity(x, num_neighbors=1, mask=mask, groups=groups,
                                   num_groups=2))[0]
  want3 = np.zeros((5, 5))
  for i, js in {0: (3, 1), 1: (2, 0), 2: (1, 0), 3: (0, 2)}.items():
    want3[i, list(js)] = 1
  np.testing.assert_array_equal(a3, want3)
  # k larger than a group: every other member of that group.
  a4 = np.asarray(hsg.knn_affinity(x, num_neighbors=2, mask=mask, groups=groups,
                                   num_groups=2))[0]
  want4 = np.ones((5, 5)) - np.eye(5)
  want4[:, 4] = want4[4, :] = 0
  np.testing.assert_array_equal(a4, want4)
  with pytest.raises(ValueError, match="num_groups"):
    hsg.knn_affinity(x, groups=groups)


def test_knn_affinity_across_two_views_by_hand():
  """Two views of 3 segments each, k = 2 "within an image and its augmented views,
  respectively" (every node gets 2 neighbours in its own view and 2 in the other), and
  the Cityscapes setting k = 4 over all 6 segments together (no groups)."""
  # View 0 at angles 0, 20, 90 deg; view 1 at 5, 60, 170 deg.
  angles = np.deg2rad([0.0, 20.0, 90.0, 5.0, 60.0, 170.0])
  x = np.stack([np.cos(angles), np.sin(angles)], -1)[None].astype(np.float32)
  views = np.array([[0, 0, 0, 1, 1, 1]])
  a = np.asarray(hsg.knn_affinity(x, num_neighbors=2, groups=views, num_groups=2))[0]
  # Own view (2 others each): all of them. Other view, 2 nearest by angle:
  # 0 deg -> 5, 60; 20 -> 5, 60; 90 -> 60, 170 (80 < 85 deg); 5 -> 0, 20; 60 -> 20, 90;
  # 170 -> 90, 20 (80 < 150 deg).
  other = {0: (3, 4), 1: (3, 4), 2: (4, 5), 3: (0, 1), 4: (1, 2), 5: (2, 1)}
  want = np.zeros((6, 6))
  for i in range(6):
    own = [j for j in range(6) if views[0, j] == views[0, i] and j != i]
    want[i, own + list(other[i])] = 1
  np.testing.assert_array_equal(a, want)
  assert a[:3, 3:].sum() == 6 and a[3:, :3].sum() == 6          # cross-view edges exist
  # k = 4 over all segments: node 0 (0 deg) keeps 5, 20, 60, 90 and drops 170.
  b = np.asarray(hsg.knn_affinity(x, num_neighbors=4))[0]
  np.testing.assert_array_equal(b[0], [0, 1, 1, 1, 1, 0])
  assert (b.sum(1) == 4).all()


def _block_graph(sizes):
  n = sum(sizes)
  a = np.zeros((n, n), np.float32)
  start = 0
  for size in sizes:
    a[start:start + size, start:start + size] = 1
    start += size
  np.fill_diagonal(a, 0)
  return a


def _np_authors_modularity(a, c):
  """Direct transcription of the authors' `dmon_pool_loss` normaliser (twke18/HSG):
  Q = [Tr(C^T A C) - Tr(C^T d d^T C) / (2 sum A)] / (2 sum A), d = A 1."""
  d = a.sum(axis=1)
  two_sum = 2 * a.sum()
  return (np.trace(c.T @ a @ c) - np.trace(c.T @ np.outer(d, d) @ c) / two_sum) / two_sum


def test_modularity_authors_normaliser_by_hand():
  # Two disjoint (symmetric) edges 0-1, 2-3, split perfectly: sum A = 4, Tr(C^T A C) = 4,
  # d = 1 each, Tr(C^T d d^T C) = 2^2 + 2^2 = 8: Q = (4 - 8/8) / 8 = 0.375.
  a = np.zeros((4, 4), np.float32)
  a[0, 1] = a[1, 0] = a[2, 3] = a[3, 2] = 1
  c = np.repeat(np.eye(2), 2, axis=0)
  np.testing.assert_allclose(hsg.modularity(a[None], c[None]), [0.375], rtol=1e-6)
  np.testing.assert_allclose(_np_authors_modularity(a, c), 0.375)
  # Everything in one cluster: (4 - 16/8) / 8 = 0.25 (not 0: the authors' 2 sum A).
  np.testing.assert_allclose(hsg.modularity(a[None], np.ones((1, 4, 1))), [0.25], rtol=1e-6)
  # Padded nodes (rows / columns 4, 5) are masked out, their assignments ignored.
  padded_a = np.zeros((6, 6), np.float32)
  padded_a[:4, :4] = a
  padded_c = np.concatenate([c[:, ::-1], np.ones((2, 2))])
  mask = np.arange(6) < 4
  np.testing.assert_allclose(
      hsg.modularity(padded_a[None], padded_c[None], node_mask=mask[None]), [0.375],
      rtol=1e-6)


def test_modularity_matches_the_authors_formula_on_a_directed_graph():
  # Hand-built directed graph (a k = 1 graph with one mutual pair) and soft assignments.
  a = np.zeros((5, 5), np.float32)
  for i, j in [(0, 1), (1, 0), (2, 0), (3, 4), (4, 2)]:
    a[i, j] = 1
  rng = np.random.default_rng(0)
  c = rng.dirichlet(np.ones(3), size=5).astype(np.float32)
  np.testing.assert_allclose(hsg.modularity(a[None], c[None])[0],
                             _np_authors_modularity(a, c), rtol=1e-5)
  # Hard split {0, 1, 2}, {3, 4}: sum A = 5, Tr(C^T A C) = 3 + 1 = 4, out-degrees
  # all 1 -> (3^2 + 2^2) = 13: Q = (4 - 13/10) / 10 = 0.27.
  hard = np.zeros((5, 2))
  hard[:3, 0] = hard[3:, 1] = 1
  np.testing.assert_allclose(hsg.modularity(a[None], hard[None]), [0.27], rtol=1e-6)
  assert float(hsg.modularity(np.zeros((1, 3, 3)), np.ones((1, 3, 2)))[0]) == 0.0


def test_collapse_regularization_by_hand():
  balanced = np.repeat(np.eye(4), 2, axis=0)[None]             # 8 nodes, 2 per cluster
  np.testing.assert_allclose(hsg.collapse_regularization(balanced), [0.0], atol=1e-6)
  collapsed = np.zeros((1, 8, 4))
  collapsed[..., 0] = 1
  np.testing.assert_allclose(hsg.collapse_regularization(collapsed), [1.0], rtol=1e-6)
  # Padded nodes do not count: 3 valid nodes in clusters (0, 0, 1), K = 2:
  # sqrt(2)/3 * ||(2, 1)|| - 1.
  c = np.array([[[1, 0], [1, 0], [0, 1], [0.3, 0.7]]], np.float32)
  node_mask = np.array([[1, 1, 1, 0]], bool)
  got = hsg.collapse_regularization(c, node_mask=node_mask)
  np.testing.assert_allclose(got, [np.sqrt(2) / 3 * np.sqrt(5) - 1], rtol=1e-6)
  # The authors' form divides by the padded length 4 instead of 3 (eq. 8's n_0).
  got = hsg.collapse_regularization(c, node_mask=node_mask, normaliser="padded_length")
  np.testing.assert_allclose(got, [np.sqrt(2) / 4 * np.sqrt(5) - 1], rtol=1e-6)
  with pytest.raises(ValueError, match="padded_length"):
    hsg.collapse_regularization(c, normaliser="padded")


def test_centroid_separation_by_hand():
  z = np.array([[[2.0, 0.0], [0.0, 3.0]]], np.float32)   # orthogonal after normalising
  kappa = 4.0
  want = np.log(1 + np.exp(-kappa))
  np.testing.assert_allclose(
      hsg.centroid_separation_loss(z, concentration=kappa), want, rtol=1e-5)
  # A masked centroid is neither an anchor nor a competitor.
  z3 = np.concatenate([z, [[[1.0, 1.0]]]], axis=1)
  got = hsg.centroid_separation_loss(z3, concentration=kappa,
                                     mask=np.array([[True, True, False]]))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_grouping_loss_composes_terms_and_prefers_the_true_clusters():
  rng = np.random.default_rng(3)
  centres = _unit(rng.normal(size=(2, 8)))
  x0 = (np.repeat(centres, 4, axis=0) + 0.05 * rng.normal(size=(8, 8)))[None]
  x0 = x0.astype(np.float32)
  good = np.repeat(np.eye(2), 4, axis=0)[None].astype(np.float32)
  bad = np.tile(np.eye(2), (4, 1))[None].astype(np.float32)
  z = np.eye(2, 8)[None].astype(np.float32)
  g = hsg.grouping_loss(x0, good, z)
  adj = hsg.knn_affinity(x0)
  want = (-hsg.modularity(adj, good)[0] + hsg.collapse_regularization(good)[0]
          + hsg.centroid_separation_loss(z))
  np.testing.assert_allclose(float(g), float(want), rtol=1e-6)
  assert float(g) < float(hsg.grouping_loss(x0, bad, z))
  # Views and the authors' collapse normaliser reach the terms.
  views = np.array([[0, 1] * 4])
  g = hsg.grouping_loss(x0, good, z, node_groups=views, num_groups=2,
                        collapse_normaliser="padded_length")
  adj = hsg.knn_affinity(x0, groups=views, num_groups=2)
  want = (-hsg.modularity(adj, good)[0]
          + hsg.collapse_regularization(good, normaliser="padded_length")[0]
          + hsg.centroid_separation_loss(z))
  np.testing.assert_allclose(float(g), float(want), rtol=1e-6)


def test_grouping_loss_gradients_finite_with_single_node_images():
  rng = np.random.default_rng(4)
  x0 = jnp.asarray(rng.normal(size=(2, 5, 6)), jnp.float32)
  mask = jnp.asarray([[True] * 5, [True] + [False] * 4])   # image 2: one segment
  logits = jnp.asarray(rng.normal(size=(2, 5, 3)), jnp.float32)
  z = jnp.asarray(rng.normal(size=(2, 3, 6)), jnp.float32)

  def loss(logits, z):
    return hsg.grouping_loss(x0, jax.nn.softmax(logits) * mask[..., None], z,
                             node_mask=mask)

  value, grads = jax.value_and_grad(loss, argnums=(0, 1))(logits, z)
  assert np.isfinite(float(value))
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_array_equal(np.asarray(grads[0])[1, 1:], 0.0)  # padded nodes


def test_total_loss_weights():
  got = hsg.total_loss(coherent_contrastive=jnp.asarray(2.0),
                       level_contrastive=[jnp.asarray(1.0), jnp.asarray(3.0)],
                       level_grouping=[jnp.asarray(0.5), jnp.asarray(-0.25)],
                       lambda_e=1.0, lambda_f=0.1, lambda_g=2.0)
  np.testing.assert_allclose(float(got), 2.0 + 0.4 + 0.5, rtol=1e-6)
