"""CAST's superpixel means (a per-image scatter-add) against a NumPy loop."""

import jax
import numpy as np

from jhseg.models import cast


def test_segment_means_match_numpy_with_empty_and_out_of_range_labels():
  # Ids outside [0, S) belong to no segment; segment 3 has no cell (zero mean, absent).
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  labels = rng.integers(-1, 3, size=(2, 3, 4))
  labels[0, 0, :2] = 4  # >= S: dropped, as -1
  labels[1, 2, 3] = 0
  means, present = jax.jit(cast.segment_means, static_argnums=2)(features, labels, 4)
  for b in range(2):
    for s in range(4):
      cells = features[b][labels[b] == s]
      assert present[b, s] == (len(cells) > 0)
      want = cells.mean(axis=0) if len(cells) else np.zeros(5, np.float32)
      np.testing.assert_allclose(means[b, s], want, rtol=1e-6, atol=1e-6)
  assert not present[:, 3].any()
