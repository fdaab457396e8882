"""CAST graph pooling (jhseg.models.cast_pooling): FPS and a hand-computed pooling."""
import math

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg.models import cast_pooling
from cast_torch_reference import fps_float64


def test_fps_matches_float64_reference_on_well_separated_points():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(3, 50, 16)).astype(np.float32)
  ours = jax.jit(cast_pooling.farthest_point_sampling, static_argnums=1)(points, 12)
  np.testing.assert_array_equal(np.asarray(ours), fps_float64(points, 12))
  assert ours.dtype == jnp.int32
  for row in np.asarray(ours):  # no point sampled twice
    assert len(set(row.tolist())) == 12


def test_fps_ties_take_the_first_index_as_dgl():
  # From (0, 0): (2, 0) and (-2, 0) tie at 4 -> index 2; then (-2, 0) (4 < 16 for
  # (0, 1): 1 < 5), then (0, 1).
  points = np.array([[[0, 0], [0, 1], [2, 0], [-2, 0]]], np.float32)
  np.testing.assert_array_equal(cast_pooling.farthest_point_sampling(points, 4),
                                [[0, 2, 3, 1]])
  np.testing.assert_array_equal(fps_float64(points, 4), [[0, 2, 3, 1]])


def test_fps_float32_vs_float64_on_token_like_features():
  """How often float32 changes the samples: measured on 197 x 384 tokens, K = 65.

  Tokens clustered around a common offset (as LayerNorm'd transformer features are)
  make distances large relative to their differences; with the DGL-style
  sum((a - b)^2) both precisions agree on every sample here. The assertion bounds the
  rate (documented in cast_pooling's Faithfulness section) rather than requiring 0.
  """
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(8, 1, 384))
  points = 3.0 + centres[rng.integers(0, 8, size=(16, 197))][:, :, 0] + 0.3 * rng.normal(
      size=(16, 197, 384))
  ours = np.asarray(cast_pooling.farthest_point_sampling(points.astype(np.float32), 65))
  reference = fps_float64(points, 65)
  differing = np.mean(np.any(ours != reference, axis=1))
  assert differing <= 1 / 16


def test_fps_rejects_too_many_samples():
  with pytest.raises(ValueError, match="num_samples=5"):
    cast_pooling.farthest_point_sampling(np.zeros((1, 4, 2), np.float32), 5)


def _six_token_pooling(dim=4):
  pool = cast_pooling.GraphPooling(dim, 2, num_heads=1, dropout=0.0, rngs=nnx.Rngs(0))
  attn = pool.centroid_fc.attn  # zero attention: U = Z - mean(Z) + bias, with bias = 0
  for layer in (attn.qkv, attn.proj):
    layer.kernel.set_value(jnp.zeros_like(layer.kernel[...]))
  pool.centroid_fc.bias.set_value(jnp.zeros((dim,)))
  return pool


# Six tokens of mean 0 on two axes: FPS from the mean picks t0 (|t|^2 = 16, first of
# the tie with t2), then t2 (distance 64 from t0). Cosines with (t0, t2) = (+-1, -+1)
# for t0..t3 and (0, 0) for t4, t5.
SIX = np.array([[4, 0, 0, 0], [3, 0, 0, 0], [-4, 0, 0, 0], [-3, 0, 0, 0],
                [0, 1, 0, 0], [0, -1, 0, 0]], np.float32)


def _hand_assignments():
  near = 1 / (1 + math.exp(-10))
  return np.array([[near, 1 - near], [near, 1 - near], [1 - near, near], [1 - near, near],
                   [0.5, 0.5], [0.5, 0.5]])


def test_graph_pooling_on_six_hand_computed_tokens():
  pool = _six_token_pooling()
  cls = jnp.array([[[0.5, -1.0, 2.0, 0.0]]])
  out = nnx.jit(lambda m, c, t: m(c, t))(pool, cls, jnp.asarray(SIX)[None])
  np.testing.assert_array_equal(out.sampled_indices, [[0, 2]])
  cosines = np.array([[1, -1], [1, -1], [-1, 1], [-1, 1], [0, 0], [0, 0]])
  np.testing.assert_allclose(out.logits[0], 5 * cosines, atol=1e-5)
  p = _hand_assignments()
  np.testing.assert_allclose(out.assignments[0], p, atol=1e-6)
  hidden = np.asarray(pool.fc1(jnp.asarray(SIX)))  # per-token maps, applied alone
  pooled = (p.T @ hidden) / p.sum(0)[:, None]
  expected = np.asarray(pool.fc2(jnp.asarray(pooled, jnp.float32))) + SIX[[0, 2]]
  np.testing.assert_allclose(out.tokens[0], expected, rtol=1e-5, atol=1e-5)
  expected_cls = np.asarray(pool.fc2(pool.fc1(cls))) + np.asarray(cls)
  np.testing.assert_allclose(out.class_token, expected_cls, rtol=1e-5, atol=1e-5)


def test_padded_tokens_change_nothing():
  pool = _six_token_pooling()
  cls = jnp.ones((1, 1, 4))
  call = nnx.jit(lambda m, c, t, k: m(c, t, k))
  reference = call(pool, cls, jnp.asarray(SIX)[None], None)
  padded = np.concatenate([SIX, 100 * np.ones((3, 4), np.float32)])  # far away: FPS bait
  mask = jnp.arange(9)[None] < 6
  out = call(pool, cls, jnp.asarray(padded)[None], mask)
  np.testing.assert_array_equal(out.sampled_indices, reference.sampled_indices)
  np.testing.assert_allclose(out.tokens, reference.tokens, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.class_token, reference.class_token, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out.assignments[0, :6], reference.assignments[0], atol=1e-6)
  np.testing.assert_array_equal(out.assignments[0, 6:], 0)


def test_gradients_reach_every_trained_layer():
  pool = cast_pooling.GraphPooling(8, 3, num_heads=2, dropout=0.0, rngs=nnx.Rngs(1))
  tokens = jax.random.normal(jax.random.key(0), (2, 10, 8))
  cls = jax.random.normal(jax.random.key(1), (2, 1, 8))

  def loss(module):
    out = module(cls, tokens)
    return jnp.sum(out.tokens ** 2) + jnp.sum(out.class_token ** 2)

  grads = nnx.jit(nnx.grad(loss))(pool)
  for path, value in nnx.to_flat_state(grads):
    assert jnp.all(jnp.isfinite(value[...])), path
    assert jnp.any(value[...] != 0), path
