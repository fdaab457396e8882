"""Spherical k-means and region splitting against plain NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import spherical_kmeans as skm


def _np_unit(x):
  n = np.linalg.norm(x, axis=-1, keepdims=True)
  return np.where(n > 0, x / np.maximum(n, 1e-30), 0.0)


def _np_kmeans(emb, grid, iters, mask, location_weight):
  """Reference: loops over images, explicit M/E steps in float64."""
  b, h, w, d = emb.shape
  out = np.full((b, h, w), -1, np.int64)
  k = grid[0] * grid[1]
  init = np.zeros((h, w), np.int64)
  for i in range(h):
    for j in range(w):
      init[i, j] = (i * grid[0] // h) * grid[1] + (j * grid[1] // w)
  ys, xs = np.meshgrid(np.linspace(0, 1, h) - 0.5, np.linspace(0, 1, w) - 0.5,
                       indexing="ij")
  for n in range(b):
    f = _np_unit(emb[n].astype(np.float64))
    if location_weight:
      f = _np_unit(np.concatenate(
          [f, location_weight * np.stack([ys, xs], -1)], -1))
    f = f.reshape(h * w, -1)
    valid = mask[n].reshape(-1)
    lab = init.reshape(-1).copy()
    for _ in range(iters):
      protos = np.zeros((k, f.shape[1]))
      nonempty = np.zeros(k, bool)
      for c in range(k):
        sel = valid & (lab == c)
        if sel.any():
          protos[c] = _np_unit(f[sel].sum(0))
          nonempty[c] = True
      sims = f @ protos.T
      sims[:, ~nonempty] = -np.inf
      lab = np.argmax(sims, 1)
    out[n] = np.where(valid, lab, -1).reshape(h, w)
  return out


def _blobs(rng, b, h, w, d):
  """Embeddings from a few well-separated directions with noise."""
  centres = _np_unit(rng.normal(size=(3, d)))
  region = np.zeros((b, h, w), np.int64)
  region[:, :, w // 2:] = 1
  region[:, h // 2:, : w // 3] = 2
  emb = centres[region] + 0.3 * rng.normal(size=(b, h, w, d))
  return emb.astype(np.float32)


def test_grid_labels_by_hand():
  got = np.asarray(skm.grid_labels(4, 6, (2, 3)))
  want = np.array([[0, 0, 1, 1, 2, 2],
                   [0, 0, 1, 1, 2, 2],
                   [3, 3, 4, 4, 5, 5],
                   [3, 3, 4, 4, 5, 5]])
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match="grid"):
    skm.grid_labels(4, 6, (5, 1))


@pytest.mark.parametrize("location_weight", [0.0, 1.0])
def test_kmeans_matches_numpy_reference(location_weight):
  rng = np.random.default_rng(0)
  emb = _blobs(rng, 2, 12, 10, 5)
  mask = rng.random((2, 12, 10)) > 0.15
  res = jax.jit(lambda e, m: skm.spherical_kmeans(
      e, grid=(2, 2), num_iterations=6, mask=m, location_weight=location_weight))(
          emb, mask)
  want = _np_kmeans(emb, (2, 2), 6, mask, location_weight)
  np.testing.assert_array_equal(np.asarray(res.labels), want)
  assert res.labels.dtype == jnp.int32
  assert res.prototypes.shape == (2, 4, 5) and res.counts.shape == (2, 4)
  # Prototypes are the unit mean directions of the plain embeddings per final cluster.
  for n in range(2):
    for c in range(4):
      sel = want[n] == c
      np.testing.assert_equal(int(res.counts[n, c]), int(sel.sum()))
      if sel.any():
        np.testing.assert_allclose(res.prototypes[n, c],
                                   _np_unit(_np_unit(emb[n][sel]).sum(0)), atol=1e-5)
      else:
        np.testing.assert_allclose(res.prototypes[n, c], 0.0)


def test_kmeans_zero_iterations_is_the_grid_and_mask_gives_minus_one():
  emb = jnp.ones((1, 4, 4, 3))
  mask = jnp.ones((1, 4, 4), bool).at[0, 0, 0].set(False)
  res = skm.spherical_kmeans(emb, grid=(2, 2), num_iterations=0, mask=mask)
  want = np.array(skm.grid_labels(4, 4, (2, 2)))
  want[0, 0] = -1
  np.testing.assert_array_equal(res.labels[0], want)


def test_kmeans_recovers_separated_clusters():
  # Two opposite directions left/right: 2x1 grid k-means must split them exactly.
  emb = np.zeros((1, 6, 8, 2), np.float32)
  emb[..., :5, 0] = 1.0
  emb[..., 5:, 0] = -1.0
  emb[..., 1] = 0.05
  res = skm.spherical_kmeans(jnp.asarray(emb), grid=(1, 2), num_iterations=3,
                             location_weight=0.0)
  labels = np.asarray(res.labels[0])
  assert (labels[:, :5] == labels[0, 0]).all() and (labels[:, 5:] == labels[0, 7]).all()
  assert labels[0, 0] != labels[0, 7]


def test_kmeans_bad_shapes():
  with pytest.raises(ValueError, match=r"\(B, H, W, D\)"):
    skm.spherical_kmeans(jnp.ones((4, 4, 3)))
  with pytest.raises(ValueError, match="mask"):
    skm.spherical_kmeans(jnp.ones((1, 4, 4, 3)), mask=jnp.ones((4, 4), bool))


def _np_split(a, b, valid):
  keys = sorted({(int(x), int(y)) for x, y, v in zip(a.ravel(), b.ravel(), valid.ravel())
                 if v})
  index = {k: i for i, k in enumerate(keys)}
  out = np.full(a.shape, -1)
  for pos in np.ndindex(a.shape):
    if valid[pos]:
      out[pos] = index[(int(a[pos]), int(b[pos]))]
  return out, keys


def test_split_by_regions_matches_reference_and_nests():
  rng = np.random.default_rng(1)
  a = rng.integers(0, 3, size=(2, 5, 7))
  b = rng.integers(0, 4, size=(2, 5, 7))
  b[1, 0, 0] = -1  # a negative label is invalid
  mask = rng.random((2, 5, 7)) > 0.1
  res = jax.jit(lambda a, b, m: skm.split_by_regions(a, b, max_segments=16, mask=m))(
      a, b, mask)
  for n in range(2):
    valid = mask[n] & (a[n] >= 0) & (b[n] >= 0)
    want, keys = _np_split(a[n], b[n], valid)
    np.testing.assert_array_equal(res.labels[n], want)
    assert int(res.num_segments[n]) == len(keys)
    np.testing.assert_array_equal(res.valid[n], np.arange(16) < len(keys))
    np.testing.assert_array_equal(res.label_a[n, :len(keys)], [k[0] for k in keys])
    np.testing.assert_array_equal(res.label_b[n, :len(keys)], [k[1] for k in keys])
    assert (np.asarray(res.label_a[n, len(keys):]) == -1).all()
    assert (np.asarray(res.label_b[n, len(keys):]) == -1).all()


def test_split_by_regions_overflow_drops_extra_regions():
  a = jnp.asarray(np.arange(6).reshape(1, 2, 3))
  b = jnp.zeros((1, 2, 3), jnp.int32)
  res = skm.split_by_regions(a, b, max_segments=4)
  np.testing.assert_array_equal(res.labels[0], [[0, 1, 2], [3, -1, -1]])
  assert int(res.num_segments[0]) == 6
  assert bool(res.valid[0].all())


def test_segment_prototypes_ignores_out_of_range_and_masked():
  emb = jnp.asarray([[[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [5.0, 5.0]]])
  labels = jnp.asarray([[0, 0, -1, 1]])
  mask = jnp.asarray([[True, True, True, False]])
  protos, counts = skm.segment_prototypes(emb, labels, 3, mask=mask)
  np.testing.assert_allclose(protos[0, 0], np.array([1.0, 2.0]) / np.sqrt(5.0),
                             rtol=1e-6)
  np.testing.assert_allclose(protos[0, 1:], 0.0)
  np.testing.assert_array_equal(counts[0], [2, 0, 0])
  # Finite gradients through an empty segment's normalisation.
  g = jax.grad(lambda e: skm.segment_prototypes(e, labels, 3, mask=mask)[0].sum())(emb)
  assert np.isfinite(np.asarray(g)).all()


def test_base_grouping_splits_kmeans_by_regions():
  rng = np.random.default_rng(3)
  emb = _blobs(rng, 2, 8, 8, 4)
  regions = np.zeros((2, 8, 8), np.int64)
  regions[:, 4:, :] = 5                   # a horizontal cut through every cluster
  plain = skm.spherical_kmeans(emb, grid=(2, 2), num_iterations=4)
  got = jax.jit(lambda e, r: skm.base_grouping(e, r, grid=(2, 2), num_iterations=4,
                                               max_segments=12))(emb, regions)
  assert got.labels.shape == (2, 8, 8) and got.prototypes.shape == (2, 12, 4)
  for n in range(2):
    want, keys = _np_split(np.asarray(plain.labels[n]), regions[n],
                           np.ones((8, 8), bool))
    np.testing.assert_array_equal(got.labels[n], want)
    np.testing.assert_array_equal(got.region[n, :len(keys)], [k[1] for k in keys])
    np.testing.assert_array_equal(got.valid[n], np.arange(12) < len(keys))
    for s_id in range(len(keys)):
      sel = want == s_id
      np.testing.assert_allclose(got.prototypes[n, s_id],
                                 _np_unit(_np_unit(emb[n][sel]).sum(0)), atol=1e-5)
  # Without regions G0 is the k-means itself; prototypes carry the gradient.
  g0 = skm.base_grouping(emb, grid=(2, 2), num_iterations=4)
  np.testing.assert_array_equal(g0.labels, plain.labels)
  grad = jax.grad(lambda e: skm.base_grouping(e, grid=(2, 2), num_iterations=4)
                  .prototypes[:, 0, 0].sum())(jnp.asarray(emb))
  assert np.isfinite(np.asarray(grad)).all() and np.abs(np.asarray(grad)).sum() > 0
  with pytest.raises(ValueError, match="max_segments"):
    skm.base_grouping(emb, regions)
