"""jhseg.losses.del_loss: eq. 3 and eq. 4 against hand-computed values on 3 superpixels,
and the gradient against the authors' analytic backward formula."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jhseg.losses import del_loss

# v0 = (0, 0), v1 = (1, 0), v2 = (0, 2): L1 distances 1 (0-1), 2 (0-2), 3 (1-2).
EMB = jnp.asarray([[[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
PAIRS = jnp.asarray([[[0, 1], [0, 2], [1, 2], [0, 0]]])
MASK = jnp.asarray([[True, True, True, False]])
LABELS = jnp.asarray([[4, 4, 7, -1]])  # 0 and 1 same segment, 2 another


def test_similarity_hand_values():
  d = del_loss.pair_similarities(EMB, PAIRS)
  np.testing.assert_allclose(d[0, :3], [2 / (1 + math.e), 2 / (1 + math.e ** 2),
                                        2 / (1 + math.e ** 3)], rtol=1e-6)
  assert d[0, 3] == 1.0  # identical embeddings


def test_loss_hand_value():
  d01, d02, d12 = 2 / (1 + math.e), 2 / (1 + math.e ** 2), 2 / (1 + math.e ** 3)
  alpha = 1 / 3  # one positive pair out of three
  expected = -((1 - alpha) * math.log(d01) + alpha * (math.log(1 - d02) + math.log(1 - d12)))
  loss = del_loss.similarity_loss(EMB, PAIRS, MASK, LABELS)
  np.testing.assert_allclose(loss, [expected], rtol=1e-6)
  normalized = del_loss.similarity_loss(EMB, PAIRS, MASK, LABELS, normalize=True)
  np.testing.assert_allclose(normalized, [expected / 3], rtol=1e-6)


def test_ignored_superpixel_leaves_y_and_changes_alpha():
  labels = jnp.asarray([[4, 4, -1, -1]])  # superpixel 2 impure: only pair (0, 1), alpha = 1
  loss = del_loss.similarity_loss(EMB, PAIRS, MASK, labels)
  # alpha = 1 -> the positive term has weight 1 - alpha = 0
  np.testing.assert_allclose(loss, [0.0], atol=1e-7)
  labels = jnp.asarray([[4, 5, -1, -1]])  # one negative pair, alpha = 0 -> weight 0 too
  np.testing.assert_allclose(del_loss.similarity_loss(EMB, PAIRS, MASK, labels), [0.0], atol=1e-7)
  labels = jnp.asarray([[4, 4, 4, -1]])
  none = del_loss.similarity_loss(EMB, PAIRS, jnp.zeros_like(MASK), labels)
  np.testing.assert_allclose(none, [0.0])


def test_gradient_matches_authors_backward():
  rng = np.random.default_rng(0)
  emb = jnp.asarray(rng.normal(size=(1, 4, 3)))
  pairs = jnp.asarray([[[0, 1], [1, 2], [2, 3], [0, 3]]])
  mask = jnp.ones((1, 4), bool)
  labels = jnp.asarray([[0, 0, 1, 1]])
  grad = np.asarray(jax.grad(lambda e: del_loss.similarity_loss(e, pairs, mask, labels)[0])(emb))
  # SimilarityLoss::Backward_cpu: per pair, base = sigmoid(x) N_neg / N (positive) or
  # -2 / (e^x - e^-x) N_pos / N (negative), times sign(v_i - v_j), + on i and - on j.
  e = np.asarray(emb[0], np.float64)
  same = [True, False, True, False]
  n_pos, n_neg = sum(same), len(same) - sum(same)
  expected = np.zeros_like(e)
  for (i, j), s in zip(np.asarray(pairs[0]), same):
    x = np.abs(e[i] - e[j]).sum()
    base = (1 / (1 + np.exp(-x)) * n_neg if s else -2 / (np.exp(x) - np.exp(-x)) * n_pos)
    base /= n_pos + n_neg
    expected[i] += base * np.sign(e[i] - e[j])
    expected[j] -= base * np.sign(e[i] - e[j])
  np.testing.assert_allclose(grad[0], expected, rtol=1e-5)
