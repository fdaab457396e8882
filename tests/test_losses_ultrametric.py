"""Ultrametric U-Net losses on tiny hand-built images, against NumPy loops."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jhseg import losses

LEVELS = (0.0, 0.5, 1.0)


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _edge_list(height, width):
  """(pixel a, pixel b, 'h'|'v', i, j) for every 4-adjacency edge, by explicit loops."""
  edges = []
  for i in range(height):
    for j in range(width):
      if j + 1 < width:
        edges.append(((i, j), (i, j + 1), "h", i, j))
      if i + 1 < height:
        edges.append(((i, j), (i + 1, j), "v", i, j))
  return edges


def _reference_loss(pixel_probs, h_target, v_target, valid=None):
  """eq. (1) for ONE image with loops: -(1/|E|) Σ_λ β_λ Σ_{e∈E_λ} log((p_λ(x)+p_λ(y))/2)."""
  height, width, num_levels = pixel_probs.shape
  terms = []  # (level, log p_level(e)) for valid edges
  for a, b, kind, i, j in _edge_list(height, width):
    if valid is not None and not (valid[a] and valid[b]):
      continue
    level = (h_target if kind == "h" else v_target)[i, j]
    terms.append((level, math.log((pixel_probs[a][level] + pixel_probs[b][level]) / 2)))
  total = len(terms)
  if total == 0:
    return 0.0
  loss = 0.0
  for level in range(num_levels):
    count = sum(1 for lv, _ in terms if lv == level)
    beta = 1.0 - count / total
    loss -= beta * sum(lp for lv, lp in terms if lv == level)
  return loss / total


def _loss_from_logits(logits, h_target, v_target, mask=None):
  log_probs = losses.edge_level_log_probabilities(logits)
  return losses.balanced_edge_cross_entropy(log_probs, (h_target, v_target), mask=mask)


def test_edge_probabilities_are_the_mean_of_the_two_pixels():
  probs = _softmax(np.random.default_rng(0).normal(size=(1, 2, 3, 3)))
  h, v = losses.edge_level_probabilities(jnp.asarray(probs))
  assert h.shape == (1, 2, 2, 3) and v.shape == (1, 1, 3, 3)
  for a, b, kind, i, j in _edge_list(2, 3):
    expected = (probs[0][a] + probs[0][b]) / 2
    np.testing.assert_allclose((h if kind == "h" else v)[0, i, j], expected, rtol=1e-6)
  np.testing.assert_allclose(np.sum(h, -1), 1.0, rtol=1e-6)


def test_edge_log_probabilities_match_log_of_mean_and_stay_finite():
  logits = np.random.default_rng(1).normal(size=(2, 3, 4, 3)).astype(np.float32)
  h, v = losses.edge_level_log_probabilities(jnp.asarray(logits))
  h_p, v_p = losses.edge_level_probabilities(jax.nn.softmax(jnp.asarray(logits)))
  np.testing.assert_allclose(h, np.log(h_p), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(v, np.log(v_p), rtol=1e-5, atol=1e-6)
  # Saturated logits: probabilities underflow to 0 but the log stays finite.
  extreme = jnp.asarray([[[[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]]]])
  h, _ = losses.edge_level_log_probabilities(extreme)
  assert np.all(np.isfinite(h))
  np.testing.assert_allclose(h[0, 0, 0, 0], math.log(0.5), rtol=1e-6)


def test_balanced_cross_entropy_hand_computed_2x2():
  # 2x2 image, uniform predictions: every log p_λ(e) = log(1/3).
  # Edges: h = [[0], [2]], v = [[0, 1]]; |E| = 4, |E_0| = 2, |E_1| = |E_2| = 1,
  # β = (1/2, 3/4, 3/4); loss = (1/4)(2·1/2 + 3/4 + 3/4)·log 3 = (5/8) log 3.
  logits = jnp.zeros((1, 2, 2, 3))
  h_target = jnp.asarray([[[0], [2]]], jnp.int32)
  v_target = jnp.asarray([[[0, 1]]], jnp.int32)
  loss = _loss_from_logits(logits, h_target, v_target)
  assert loss.shape == (1,) and loss.dtype == jnp.float32
  np.testing.assert_allclose(loss, [5 / 8 * math.log(3)], rtol=1e-6)


def test_balanced_cross_entropy_matches_loops_with_beta_per_image():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
  h_target = np.array([[[0, 1], [2, 2]], [[0, 0], [0, 1]]], np.int32)
  v_target = np.array([[[0, 0, 1]], [[0, 0, 0]]], np.int32)
  loss = _loss_from_logits(jnp.asarray(logits), jnp.asarray(h_target),
                           jnp.asarray(v_target))
  expected = [_reference_loss(_softmax(logits[b]), h_target[b], v_target[b])
              for b in range(2)]
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  # β per image: each image alone gives the same value as inside the batch.
  alone = _loss_from_logits(jnp.asarray(logits[1:]), jnp.asarray(h_target[1:]),
                            jnp.asarray(v_target[1:]))
  np.testing.assert_allclose(alone, loss[1:], rtol=1e-6)


def test_mask_ignores_padding():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
  h_target = rng.integers(0, 3, size=(1, 2, 2)).astype(np.int32)
  v_target = rng.integers(0, 3, size=(1, 1, 3)).astype(np.int32)
  unpadded = _loss_from_logits(jnp.asarray(logits), jnp.asarray(h_target),
                               jnp.asarray(v_target))
  # Pad to 4x5 with garbage predictions and targets, masked out.
  padded_logits = 50 * rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
  padded_logits[:, :2, :3] = logits
  padded_h = rng.integers(0, 3, size=(1, 4, 4)).astype(np.int32)
  padded_v = rng.integers(0, 3, size=(1, 3, 5)).astype(np.int32)
  padded_h[:, :2, :2] = h_target
  padded_v[:, :1, :3] = v_target
  valid = np.zeros((1, 4, 5), bool)
  valid[:, :2, :3] = True
  mask = losses.edge_mask_from_pixel_mask(jnp.asarray(valid))
  padded = _loss_from_logits(jnp.asarray(padded_logits), jnp.asarray(padded_h),
                             jnp.asarray(padded_v), mask=mask)
  np.testing.assert_allclose(padded, unpadded, rtol=1e-6)
  np.testing.assert_allclose(
      padded, [_reference_loss(_softmax(padded_logits[0]), padded_h[0], padded_v[0],
                               valid[0])], rtol=1e-5)
  unmasked = _loss_from_logits(jnp.asarray(padded_logits), jnp.asarray(padded_h),
                               jnp.asarray(padded_v))
  assert not np.allclose(unmasked, unpadded)


def test_edge_mask_from_pixel_mask_hand_case():
  valid = jnp.asarray([[[1, 1, 0], [1, 0, 0]]], bool)
  h, v = losses.edge_mask_from_pixel_mask(valid)
  np.testing.assert_array_equal(h, [[[True, False], [False, False]]])
  np.testing.assert_array_equal(v, [[[True, False, False]]])


def test_absent_level_term_vanishes():
  # No edge at level 1: adding or changing predictions of a level nobody targets only
  # enters through the softmax normalisation, never through a β_1 term. With edge
  # log-probabilities given directly, an extra never-targeted level changes nothing.
  rng = np.random.default_rng(4)
  log_p = jnp.asarray(np.log(_softmax(rng.normal(size=(1, 6, 3)))), jnp.float32)
  target = jnp.asarray([[0, 0, 2, 0, 2, 0]], jnp.int32)
  base = losses.balanced_edge_cross_entropy(log_p, target)
  extra = jnp.concatenate([log_p, jnp.full((1, 6, 1), -3.0)], axis=-1)
  np.testing.assert_allclose(losses.balanced_edge_cross_entropy(extra, target), base,
                             rtol=1e-6)
  changed = log_p.at[..., 1].set(-7.0)
  np.testing.assert_allclose(losses.balanced_edge_cross_entropy(changed, target), base,
                             rtol=1e-6)
  # β_0 = 1 - 4/6, β_2 = 1 - 2/6, by hand.
  lp = np.asarray(log_p[0])
  expected = -(2 / 6 * (lp[0, 0] + lp[1, 0] + lp[3, 0] + lp[5, 0])
               + 4 / 6 * (lp[2, 2] + lp[4, 2])) / 6
  np.testing.assert_allclose(base, [expected], rtol=1e-5)


def test_single_level_and_empty_images_give_zero_without_nan():
  logits = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3, 3, 3)), jnp.float32)
  h_target = jnp.zeros((2, 3, 2), jnp.int32)
  v_target = jnp.zeros((2, 2, 3), jnp.int32)
  valid = jnp.ones((2, 3, 3), bool).at[1].set(False)
  mask = losses.edge_mask_from_pixel_mask(valid)
  loss_fn = lambda x: jnp.sum(_loss_from_logits(x, h_target, v_target, mask=mask))
  loss, grad = jax.value_and_grad(loss_fn)(logits)
  assert loss == 0.0  # image 0: one level so β_0 = 0; image 1: no valid edge
  assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


def test_negative_targets_are_ignored_like_masked_edges():
  rng = np.random.default_rng(6)
  logits = jnp.asarray(rng.normal(size=(1, 2, 3, 3)), jnp.float32)
  h_target = jnp.asarray([[[0, 1], [2, -1]]], jnp.int32)
  v_target = jnp.asarray([[[0, -1, 1]]], jnp.int32)
  mask = (h_target >= 0, v_target >= 0)
  np.testing.assert_allclose(
      _loss_from_logits(logits, h_target, v_target),
      _loss_from_logits(logits, jnp.maximum(h_target, 0), jnp.maximum(v_target, 0),
                        mask=mask), rtol=1e-6)


def test_gradients_are_finite_and_descend():
  rng = np.random.default_rng(7)
  logits = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
  h_target = jnp.asarray(rng.integers(0, 3, size=(2, 4, 3)), jnp.int32)
  v_target = jnp.asarray(rng.integers(0, 3, size=(2, 3, 4)), jnp.int32)
  loss_fn = jax.jit(lambda x: jnp.mean(_loss_from_logits(x, h_target, v_target)))
  loss, grad = jax.value_and_grad(loss_fn)(logits)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
  assert loss_fn(logits - 0.1 * grad) < loss
  extreme = logits * 1e4
  assert np.all(np.isfinite(jax.grad(loss_fn)(extreme)))


def test_jit_matches_eager_and_flat_edges_match_pairs():
  rng = np.random.default_rng(8)
  logits = jnp.asarray(rng.normal(size=(2, 3, 4, 2)), jnp.float32)
  h_target = jnp.asarray(rng.integers(0, 2, size=(2, 3, 3)), jnp.int32)
  v_target = jnp.asarray(rng.integers(0, 2, size=(2, 2, 4)), jnp.int32)
  eager = _loss_from_logits(logits, h_target, v_target)
  jitted = jax.jit(_loss_from_logits)(logits, h_target, v_target)
  np.testing.assert_allclose(jitted, eager, rtol=1e-6)
  h, v = losses.edge_level_log_probabilities(logits)
  flat = jnp.concatenate([h.reshape(2, -1, 2), v.reshape(2, -1, 2)], axis=1)
  flat_target = jnp.concatenate([h_target.reshape(2, -1), v_target.reshape(2, -1)], 1)
  np.testing.assert_allclose(losses.balanced_edge_cross_entropy(flat, flat_target),
                             eager, rtol=1e-6)


def test_predicted_dissimilarity_is_the_expected_level():
  h = jnp.asarray([[[[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]]])
  v = jnp.asarray([[[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.0, 0.5]]]])
  dh, dv = losses.predicted_dissimilarity((h, v), LEVELS)
  np.testing.assert_allclose(dh, [[[0.3 * 0.5 + 0.5, 0.0]]], rtol=1e-6)
  np.testing.assert_allclose(dv, [[[0.5, 1.0, 0.5]]], rtol=1e-6)
  binary = losses.predicted_dissimilarity(jnp.asarray([[0.25, 0.75]]), (0.0, 1.0))
  np.testing.assert_allclose(binary, [0.75])
  with pytest.raises(ValueError, match="3 levels.*has 2"):
    losses.predicted_dissimilarity((h, v), (0.0, 1.0))


def test_level_indices_maps_weights_to_nearest_level():
  weights = (jnp.asarray([[0.0, 0.5, 1.0, 0.49]]), jnp.asarray([[0.51, 0.9]]))
  h, v = losses.level_indices(weights, LEVELS)
  np.testing.assert_array_equal(h, [[0, 1, 2, 1]])
  np.testing.assert_array_equal(v, [[1, 2]])
  assert h.dtype == jnp.int32


def test_bad_inputs_are_reported():
  log_p = jnp.zeros((1, 2, 3, 3))
  with pytest.raises(ValueError, match="target_levels shape"):
    losses.balanced_edge_cross_entropy(log_p, jnp.zeros((1, 2, 2), jnp.int32))
  with pytest.raises(ValueError, match="integer level indices"):
    losses.balanced_edge_cross_entropy(log_p, jnp.zeros((1, 2, 3)))
  with pytest.raises(ValueError, match="same structure"):
    losses.balanced_edge_cross_entropy((log_p, log_p), jnp.zeros((1, 2, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"pixel_logits should have shape \(B, H, W, L\)"):
    losses.edge_level_log_probabilities(jnp.zeros((2, 3, 3)))


def test_batch_sharded_across_devices_gives_the_same_losses():
  if jax.device_count() < 4:
    pytest.skip("needs the 4 fake CPU devices of tests/conftest.py")
  rng = np.random.default_rng(9)
  logits = jnp.asarray(rng.normal(size=(4, 3, 5, 3)), jnp.float32)
  h_target = jnp.asarray(rng.integers(0, 3, size=(4, 3, 4)), jnp.int32)
  v_target = jnp.asarray(rng.integers(0, 3, size=(4, 2, 5)), jnp.int32)
  mesh = jax.make_mesh((4,), ("data",))
  batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  sharded = [jax.device_put(x, batch) for x in (logits, h_target, v_target)]
  loss = jax.jit(_loss_from_logits)(*sharded)
  assert loss.sharding.is_equivalent_to(batch, loss.ndim)
  np.testing.assert_allclose(loss, _loss_from_logits(logits, h_target, v_target),
                             rtol=1e-6)
