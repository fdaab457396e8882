"""Edge-level losses of the supervised ultrametric U-Net.

Reference: R. Lapertot, G. Chierchia, B. Perret, "Supervised Learning of Hierarchical
Image Segmentation", CIARP 2023 (the "paper" below).

The network predicts, for every pixel x, a distribution p(x) over L hierarchy levels
λ_0 < ... < λ_{L-1} (L = 3 with levels {0, 0.5, 1} for the object/part hierarchy of
Ultrametric Pascal-Part; L = 2 with {0, 1} for the binary BGM variants). An edge
e = {x, y} of the 4-adjacency graph gets the mean of its two pixels' predictions,

    p_λ(e) = (p_λ(x) + p_λ(y)) / 2,

which is again a distribution over levels. Edges follow the jhseg convention: a pair
(h, v) with h[b, i, j] the edge (i, j)-(i, j+1), shape (B, H, W-1, ...), and v[b, i, j]
the edge (i, j)-(i+1, j), shape (B, H-1, W, ...). The losses also accept a single array
of edges (e.g. Higra's flat order, (B, E, ...)) or any tuple of such arrays.

Everything here is a pure function of arrays, jit-able, with fixed shapes.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

# A pair (h, v) of edge arrays, or one array of edges, or any pytree of them.
Edges = Any


def edge_level_probabilities(pixel_probs: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-edge level distributions from per-pixel ones: the mean of the two pixels.

  Args:
    pixel_probs: (B, H, W, L) per-pixel distributions over the L levels.

  Returns:
    (h, v) with h of shape (B, H, W-1, L), h[b, i, j] = (p[b, i, j] + p[b, i, j+1]) / 2,
    and v of shape (B, H-1, W, L), v[b, i, j] = (p[b, i, j] + p[b, i+1, j]) / 2.
  """
  _check_rank(pixel_probs, 4, "pixel_probs", "(B, H, W, L)")
  h = 0.5 * (pixel_probs[:, :, :-1] + pixel_probs[:, :, 1:])
  v = 0.5 * (pixel_probs[:, :-1, :] + pixel_probs[:, 1:, :])
  return h, v


def edge_level_log_probabilities(pixel_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """log p_λ(e) of `edge_level_probabilities(softmax(pixel_logits))`, computed stably.

  log((p_λ(x) + p_λ(y)) / 2) = logaddexp(log p_λ(x), log p_λ(y)) - log 2, with
  log p = log_softmax(logits), so it stays finite where a probability underflows.
  Since log_softmax is idempotent on log-probabilities, per-pixel log-probabilities
  may be passed instead of logits.

  Args:
    pixel_logits: (B, H, W, L) per-pixel logits (or log-probabilities) over levels.

  Returns:
    (h, v) float32 log-probabilities of shapes (B, H, W-1, L) and (B, H-1, W, L).
  """
  _check_rank(pixel_logits, 4, "pixel_logits", "(B, H, W, L)")
  log_p = jax.nn.log_softmax(pixel_logits.astype(jnp.float32), axis=-1)
  log_half = math.log(0.5)
  h = jnp.logaddexp(log_p[:, :, :-1], log_p[:, :, 1:]) + log_half
  v = jnp.logaddexp(log_p[:, :-1, :], log_p[:, 1:, :]) + log_half
  return h, v


def edge_mask_from_pixel_mask(pixel_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Valid edges of a padded batch: an edge counts when both its pixels are valid.

  Args:
    pixel_mask: (B, H, W) boolean, True on real pixels, False on padding.

  Returns:
    (h, v) boolean masks of shapes (B, H, W-1) and (B, H-1, W).
  """
  _check_rank(pixel_mask, 3, "pixel_mask", "(B, H, W)")
  pixel_mask = pixel_mask.astype(bool)
  return (pixel_mask[:, :, :-1] & pixel_mask[:, :, 1:],
          pixel_mask[:, :-1, :] & pixel_mask[:, 1:, :])


def level_indices(edge_weights: Edges, levels: Sequence[float]) -> Edges:
  """Index of the nearest level for each edge weight, e.g. {0, 0.5, 1} -> {0, 1, 2}.

  Turns stored ultrametric targets (edge weights that take the level values) into the
  integer `target_levels` of `balanced_edge_cross_entropy`.
  """
  levels = jnp.asarray(levels, jnp.float32)
  return jax.tree.map(
      lambda w: jnp.argmin(jnp.abs(w[..., None] - levels), axis=-1).astype(jnp.int32),
      edge_weights)


def balanced_edge_cross_entropy(edge_log_probs: Edges, target_levels: Edges, *,
                                mask: Edges | None = None) -> jax.Array:
  """Balanced cross-entropy over hierarchy levels, eq. (1) of the paper, per image.

  For one image with (valid) edge set E, partitioned by target level into
  E_λ = {e in E : target(e) = λ},

      loss = -(1 / |E|) Σ_λ β_λ Σ_{e in E_λ} log p_λ(e),   β_λ = 1 - |E_λ| / |E|,

  the multi-level form of HED's class-balanced cross-entropy (Xie & Tu, ICCV 2015):
  frequent levels (the many 0-edges inside regions) are down-weighted and rare ones
  (boundaries) up-weighted, with no hyper-parameter. β is computed per image.

  Choices, where the paper leaves room:
  - The sum is divided by |E|, the image's number of valid edges, so that images of
    different sizes (or with different amounts of padding) weigh the same and the
    scale does not depend on the resolution; for one image this is a constant factor.
  - A level absent from the image (|E_λ| = 0) has an empty sum: its term vanishes,
    whatever β_λ (= 1). If all valid edges share one level, its β is 0 and the image
    contributes 0 (no gradient), as eq. (1) implies. An image without valid edges
    also gives 0.
  - Masked-out edges (padding) are removed from E and from every E_λ, so padding
    changes neither the sums nor β. Target indices outside [0, L) (e.g. -1) are
    treated as masked too.

  Args:
    edge_log_probs: log p_λ(e), float arrays (B, ..., L): a pair (h, v) as returned by
      `edge_level_log_probabilities`, a single array, or any pytree of arrays.
    target_levels: int level indices in [0, L), same structure, shapes (B, ...).
    mask: optional booleans, same structure as `target_levels`; False edges are
      ignored (e.g. `edge_mask_from_pixel_mask(valid_pixels)`).

  Returns:
    (B,) float32 per-image losses; average them for a batch loss.
  """
  log_probs = jax.tree.leaves(edge_log_probs)
  targets = jax.tree.leaves(target_levels)
  masks = (jax.tree.leaves(mask) if mask is not None
           else [jnp.ones(t.shape, bool) for t in targets])
  _check_edges(log_probs, targets, masks)
  batch, num_levels = log_probs[0].shape[0], log_probs[0].shape[-1]
  log_p = jnp.concatenate(
      [x.astype(jnp.float32).reshape(batch, -1, num_levels) for x in log_probs], axis=1)
  target = jnp.concatenate([t.reshape(batch, -1) for t in targets], axis=1)
  valid = jnp.concatenate([m.reshape(batch, -1).astype(bool) for m in masks], axis=1)
  one_hot = jax.nn.one_hot(target, num_levels, dtype=jnp.float32) * valid[..., None]
  counts = jnp.sum(one_hot, axis=1)  # |E_λ|, (B, L)
  total = jnp.sum(counts, axis=-1)  # |E|, (B,)
  safe_total = jnp.maximum(total, 1.0)
  beta = 1.0 - counts / safe_total[:, None]
  # where, not a product: a -inf log-probability on a non-target level is not an error.
  nll = -jnp.sum(jnp.where(one_hot > 0, log_p, 0.0), axis=1)  # Σ_{E_λ} -log p_λ, (B, L)
  return jnp.sum(beta * nll, axis=-1) / safe_total


def predicted_dissimilarity(edge_probs: Edges, levels: Sequence[float]) -> Edges:
  """Expected level of each edge, eq. (2) of the paper: d(e) = Σ_λ p_λ(e) · λ.

  This dissimilarity is what the inference turns into a hierarchy (watershed
  superpixels, average linkage, small-region removal).

  Args:
    edge_probs: per-edge distributions (..., L): a pair (h, v) from
      `edge_level_probabilities`, a single array, or any pytree of arrays.
    levels: the L level values λ, e.g. (0.0, 0.5, 1.0), or (0.0, 1.0) for BGM.

  Returns:
    The same structure with the level axis summed out, float32.
  """
  values = jnp.asarray(levels, jnp.float32)
  for leaf in jax.tree.leaves(edge_probs):
    if leaf.shape[-1] != values.shape[0]:
      raise ValueError(f"predicted_dissimilarity: edge_probs has {leaf.shape[-1]} levels "
                       f"on its last axis (shape {leaf.shape}) but levels={tuple(levels)} "
                       f"has {values.shape[0]}")
  return jax.tree.map(lambda p: jnp.sum(p.astype(jnp.float32) * values, axis=-1),
                      edge_probs)


def _check_rank(array: jax.Array, rank: int, name: str, expected: str) -> None:
  if array.ndim != rank:
    raise ValueError(f"{name} should have shape {expected}, got {array.shape}")


def _check_edges(log_probs, targets, masks) -> None:
  if not log_probs or len(log_probs) != len(targets) or len(targets) != len(masks):
    raise ValueError(
        f"balanced_edge_cross_entropy: edge_log_probs, target_levels and mask need the "
        f"same structure; got {len(log_probs)}, {len(targets)} and {len(masks)} arrays")
  for index, (lp, t, m) in enumerate(zip(log_probs, targets, masks)):
    if lp.shape[:-1] != t.shape or t.shape != m.shape:
      raise ValueError(
          f"balanced_edge_cross_entropy: edge array {index}: edge_log_probs shape "
          f"{lp.shape} should be target_levels shape {t.shape} plus a level axis, and "
          f"mask shape {m.shape} should equal target_levels shape")
    if lp.shape[-1] != log_probs[0].shape[-1] or lp.shape[0] != log_probs[0].shape[0]:
      raise ValueError(
          f"balanced_edge_cross_entropy: edge array {index} has shape {lp.shape}; all "
          f"must share the batch size and number of levels of {log_probs[0].shape}")
    if not jnp.issubdtype(t.dtype, jnp.integer):
      raise ValueError(f"balanced_edge_cross_entropy: target_levels must be integer level "
                       f"indices (see level_indices), got dtype {t.dtype}")
