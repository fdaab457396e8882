"""jhseg.viz.tsne: perplexity calibration against entropies computed by hand, the joint
probabilities' invariants, and neighbourhoods of well-separated clusters kept in 2-D."""
import numpy as np
import pytest

from jhseg.viz import tsne

# Four points on a line at 0, 1, 3, 7: squared distances by hand.
LINE = np.array([0.0, 1.0, 3.0, 7.0])
D = (LINE[:, None] - LINE[None, :]) ** 2


def test_perplexity_calibration_matches_the_entropy_by_hand():
  p, beta = tsne.conditional_probabilities(D, 2.0)
  p, beta = np.asarray(p, np.float64), np.asarray(beta, np.float64)
  for i in range(4):
    others = np.delete(np.arange(4), i)
    weights = np.exp(-beta[i] * D[i, others])
    expected = weights / weights.sum()
    np.testing.assert_allclose(p[i, others], expected, rtol=1e-4, atol=1e-7)
    assert p[i, i] == 0.0
    entropy = -np.sum(expected * np.log(expected))
    np.testing.assert_allclose(np.exp(entropy), 2.0, rtol=1e-3)
  # Point 0 (neighbours at squared distances 1, 9, 49): perplexity 2 needs a finite beta;
  # its nearest neighbour gets the largest probability.
  assert 0 < beta[0] < np.inf and np.argmax(p[0]) == 1


def test_joint_probabilities_are_symmetric_and_sum_to_one():
  x = np.random.default_rng(0).normal(size=(12, 3))
  p = np.asarray(tsne.joint_probabilities(x, 3.0))
  np.testing.assert_allclose(p, p.T, atol=1e-8)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(np.diag(p), 0.0)


def test_well_separated_clusters_keep_their_neighbours():
  rng = np.random.default_rng(1)
  centres = rng.normal(scale=10.0, size=(3, 8))
  labels = np.repeat(np.arange(3), 25)
  x = centres[labels] + rng.normal(size=(75, 8))
  y = tsne.tsne(x, perplexity=10.0, num_iterations=400, seed=0)
  assert y.shape == (75, 2) and np.isfinite(y).all()
  d = ((y[:, None] - y[None]) ** 2).sum(-1) + np.diag(np.full(75, np.inf))
  neighbours = np.argsort(d, axis=1)[:, :5]
  assert (labels[neighbours] == labels[:, None]).mean() == 1.0
  # Clusters are separated: every between-cluster distance exceeds every within-cluster
  # nearest-neighbour distance.
  nearest = np.sort(d, axis=1)[:, 0]
  between = d[labels[:, None] != labels[None, :]]
  assert between.min() > nearest.max()
  # Deterministic for a seed.
  np.testing.assert_array_equal(y, tsne.tsne(x, perplexity=10.0, num_iterations=400, seed=0))


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match=r"expected \(n >= 4, features\) points, got shape \(3,"):
    tsne.tsne(np.zeros((3, 2)))
