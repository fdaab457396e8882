"""DEL's similarity loss over adjacent superpixels (Liu et al., IJCAI 2018, Sec. 2.2).

With v_i the mean embedding of superpixel i (eq. 1, `jhseg.segments.segment_mean`):

  d_ij = 2 / (1 + exp(||v_i - v_j||_1))                                   (eq. 3)

in (0, 1], 1 for identical embeddings, and the balanced cross-entropy over the pairs
Y of adjacent superpixels whose ground-truth labels are known

  L = - sum_{(i,j) in Y} [(1 - alpha) l_ij log d_ij + alpha (1 - l_ij) log(1 - d_ij)]   (eq. 4)

with l_ij = 1 when i and j lie in the same ground-truth segment and
alpha = |Y+| / |Y| the share of such pairs, per image.

As the authors' SimilarityLoss layer: every unordered adjacent pair counts once,
pairs with an ignored superpixel (impure, `jhseg.superpixels.superpixel_segment_labels`)
are left out of Y, the per-image loss is the sum (not the mean) over Y, and a batch
averages the images (Caffe's iter_size accumulation).

Faithfulness: the authors skip a term whose log is -inf (a negative pair with exactly
identical embeddings); here the L1 distance of negative pairs is floored at
`min_distance` (1e-6), which keeps the term finite and its gradient bounded instead.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l1_distances(embeddings: jax.Array, pairs: jax.Array) -> jax.Array:
  """||v_i - v_j||_1 of each pair: embeddings (B, S, C), pairs (B, P, 2) -> (B, P)."""
  first = jnp.take_along_axis(embeddings, pairs[..., :1], axis=1)
  second = jnp.take_along_axis(embeddings, pairs[..., 1:], axis=1)
  return jnp.sum(jnp.abs(first - second), axis=-1)


def similarity_from_distance(distance: jax.Array) -> jax.Array:
  """Eq. 3: d = 2 / (1 + exp(distance)) = 2 sigmoid(-distance)."""
  return 2.0 * jax.nn.sigmoid(-distance)


def pair_similarities(embeddings: jax.Array, pairs: jax.Array) -> jax.Array:
  """d_ij (eq. 3) of each pair, (B, P)."""
  return similarity_from_distance(l1_distances(embeddings, pairs))


def pair_labels(superpixel_labels: jax.Array, pairs: jax.Array,
                pair_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """l_ij (B, P) bool and the (B, P) mask of pairs in Y (both superpixel labels >= 0)."""
  first = jnp.take_along_axis(superpixel_labels, pairs[..., 0], axis=1)
  second = jnp.take_along_axis(superpixel_labels, pairs[..., 1], axis=1)
  known = pair_mask & (first >= 0) & (second >= 0)
  return (first == second) & known, known


def similarity_loss(embeddings: jax.Array, pairs: jax.Array, pair_mask: jax.Array,
                    superpixel_labels: jax.Array, *, min_distance: float = 1e-6,
                    normalize: bool = False) -> jax.Array:
  """Eq. 4 per image, (B,).

  Args:
    embeddings: (B, S, C) superpixel embeddings v.
    pairs: (B, P, 2) int adjacent superpixel ids (each unordered pair once).
    pair_mask: (B, P) bool, False on padding rows.
    superpixel_labels: (B, S) int ground-truth segment per superpixel, < 0 ignored.
    min_distance: floor of the L1 distance in the negative term (see module docstring).
    normalize: divide by |Y| (a per-pair mean; the paper and code sum).

  Returns:
    (B,) losses; 0 for an image with no pair in Y.
  """
  same, known = pair_labels(superpixel_labels, pairs, pair_mask)
  distance = l1_distances(embeddings, pairs)
  # log d = log 2 + log sigmoid(-x);  log(1 - d) = log(1 - e^-x) - log(1 + e^-x).
  log_d = jnp.log(2.0) + jax.nn.log_sigmoid(-distance)
  x = jnp.maximum(distance, min_distance)
  log_one_minus_d = jnp.log(-jnp.expm1(-x)) - jnp.log1p(jnp.exp(-x))
  num_known = jnp.sum(known, axis=-1).astype(embeddings.dtype)
  num_same = jnp.sum(same, axis=-1).astype(embeddings.dtype)
  alpha = num_same / jnp.maximum(num_known, 1.0)
  positive = jnp.sum(jnp.where(same, log_d, 0.0), axis=-1)
  negative = jnp.sum(jnp.where(known & ~same, log_one_minus_d, 0.0), axis=-1)
  loss = -((1.0 - alpha) * positive + alpha * negative)
  if normalize:
    loss = loss / jnp.maximum(num_known, 1.0)
  return loss
