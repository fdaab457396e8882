"""Spherical (von Mises-Fisher) k-means over unit pixel embeddings, under `jax.jit`.

HSG (Ke et al., "Unsupervised Hierarchical Semantic Segmentation with Multiview
Cosegmentation and Clustering Transformers", CVPR 2022, section 3.2) derives its base
grouping G0 by spherical k-means over the pixel embeddings v_i (||v_i|| = 1), started
from a regular grid of segments and run for a fixed number of iterations. During
training every G0 region is further split by the coherent regions G_e of the image
(`split_by_regions`).

Spherical k-means alternates
  M-step:  u_k = sum_{i in k} v_i / || sum_{i in k} v_i ||     (mean direction)
  E-step:  label_i = argmax_k  v_i . u_k                        (cosine similarity)

Everything here has fixed shapes (cluster count from the grid, a fixed iteration
count, padded segment tables with validity masks) so that it runs on accelerators
inside a jitted training step. Labels are int32; pixels outside `mask` get label -1.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

_NORM_EPS = 1e-12


def unit_normalize(x: jax.Array, *, axis: int = -1) -> jax.Array:
  """x / ||x||, with 0 for (near) zero vectors and finite gradients there."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  # rsqrt of a clamped norm: the clamp's zero gradient keeps empty segments NaN-free.
  return x * jax.lax.rsqrt(jnp.maximum(sq, _NORM_EPS))


def grid_labels(height: int, width: int, grid: tuple[int, int]) -> jax.Array:
  """A (height, width) int32 map of `grid[0] x grid[1]` near-equal rectangular cells.

  Cell (r, c) has id r * grid[1] + c; row i belongs to cell row floor(i * grid[0] / H).
  (The authors' code rounds a linspace instead, which halves the first and last cells;
  equal cells are the plainer reading of "grid initialisation".)
  """
  rows, cols = grid
  if not (1 <= rows <= height and 1 <= cols <= width):
    raise ValueError(
        f"spherical_kmeans.grid_labels: grid {grid} must lie within 1..(height, width)"
        f" = (1..{height}, 1..{width})")
  r = (jnp.arange(height) * rows) // height
  c = (jnp.arange(width) * cols) // width
  return (r[:, None] * cols + c[None, :]).astype(jnp.int32)


def location_features(height: int, width: int) -> jax.Array:
  """(height, width, 2) pixel coordinates (y, x) scaled to [-0.5, 0.5]."""
  y = jnp.linspace(0.0, 1.0, height) - 0.5
  x = jnp.linspace(0.0, 1.0, width) - 0.5
  yy, xx = jnp.meshgrid(y, x, indexing="ij")
  return jnp.stack([yy, xx], axis=-1)


def segment_prototypes(embeddings: jax.Array, labels: jax.Array, num_segments: int,
                       *, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Mean directions u_k of the embeddings of each segment (the k-means M-step).

  Args:
    embeddings: (..., N, D) float embeddings.
    labels: (..., N) int segment ids in [0, num_segments); ids outside that range
      (e.g. -1 for invalid pixels) are ignored.
    num_segments: K, the static size of the prototype table.
    mask: optional (..., N) bool; False pixels are ignored.

  Returns:
    prototypes: (..., K, D) unit vectors u_k = sum v_i / ||sum v_i|| (0 for empty k).
    counts: (..., K) int32 number of pixels of each segment.
  """
  valid = (labels >= 0) & (labels < num_segments)
  if mask is not None:
    valid = valid & mask
  one_hot = jax.nn.one_hot(jnp.where(valid, labels, -1), num_segments,
                           dtype=embeddings.dtype)  # -1 -> all-zero row
  sums = jnp.einsum("...nk,...nd->...kd", one_hot, embeddings)
  counts = jnp.sum(one_hot, axis=-2).astype(jnp.int32)
  return unit_normalize(sums), counts


class KMeansResult(NamedTuple):
  """Output of `spherical_kmeans`.

  labels: (B, H, W) int32 cluster ids in [0, K), -1 where the mask is False.
  prototypes: (B, K, D) unit mean directions of the embeddings (without location
    features), 0 for empty clusters.
  counts: (B, K) int32 pixels per cluster.
  """
  labels: jax.Array
  prototypes: jax.Array
  counts: jax.Array


def spherical_kmeans(embeddings: jax.Array, *, grid: tuple[int, int] = (4, 4),
                     num_iterations: int = 15, mask: jax.Array | None = None,
                     location_weight: float = 1.0) -> KMeansResult:
  """Batched spherical k-means over pixel embeddings with a grid initialisation.

  K = grid[0] * grid[1] clusters start as the rectangular cells of `grid_labels`, then
  `num_iterations` rounds of M-step / E-step run (a fixed count: no convergence test,
  so the cost is static under jit). Empty clusters never win the E-step.

  The authors' code (twke18/HSG, `segment_by_kmeans`) clusters each unit embedding
  concatenated with its (y, x) position in [-0.5, 0.5] and renormalised, which keeps
  segments spatially compact; `location_weight` scales those coordinates (0 disables
  them, giving k-means on the embeddings alone). Their 448-pixel stage uses a 4x4 grid
  and 15 iterations: the defaults here.

  Args:
    embeddings: (B, H, W, D) pixel embeddings; normalised to unit length here.
    grid: (rows, cols) of the initial segments.
    num_iterations: number of M/E rounds (static).
    mask: optional (B, H, W) bool of valid pixels; invalid pixels get label -1 and do
      not move the prototypes.
    location_weight: weight of the (y, x) features appended before clustering.

  Returns:
    `KMeansResult` (labels, prototypes of the plain embeddings, counts).
  """
  if embeddings.ndim != 4:
    raise ValueError("spherical_kmeans: embeddings must be (B, H, W, D), got shape "
                     f"{embeddings.shape}")
  b, h, w, d = embeddings.shape
  if mask is not None and mask.shape != (b, h, w):
    raise ValueError(f"spherical_kmeans: mask must have shape {(b, h, w)}, got "
                     f"{mask.shape}")
  k = grid[0] * grid[1]
  unit = unit_normalize(embeddings.astype(jnp.float32))
  feats = unit
  if location_weight:
    loc = jnp.broadcast_to(location_features(h, w), (b, h, w, 2)) * location_weight
    feats = unit_normalize(jnp.concatenate([unit, loc], axis=-1))
  feats = feats.reshape(b, h * w, -1)
  valid = (jnp.ones((b, h * w), bool) if mask is None else mask.reshape(b, h * w))
  labels = jnp.broadcast_to(grid_labels(h, w, grid).reshape(1, h * w), (b, h * w))
  labels = jnp.where(valid, labels, -1)

  def step(labels, _):
    protos, counts = segment_prototypes(feats, labels, k)
    sims = jnp.einsum("bnd,bkd->bnk", feats, protos)
    sims = jnp.where(counts[:, None, :] > 0, sims, -jnp.inf)
    new = jnp.argmax(sims, axis=-1).astype(jnp.int32)
    return jnp.where(valid, new, -1), None

  labels, _ = jax.lax.scan(step, labels, None, length=num_iterations)
  protos, counts = segment_prototypes(unit.reshape(b, h * w, d), labels, k)
  return KMeansResult(labels.reshape(b, h, w), protos, counts)


class SplitResult(NamedTuple):
  """Output of `split_by_regions`.

  labels: (B, H, W) int32 ids in [0, max_segments) of the intersection regions, -1 for
    masked pixels and for regions beyond `max_segments`.
  valid: (B, max_segments) bool, True for ids that hold at least one pixel.
  num_segments: (B,) int32 number of distinct regions before truncation (compare to
    `max_segments` to detect overflow).
  label_a: (B, max_segments) int32 label of `labels_a` each new segment lies in
    (-1 for unused ids), e.g. its k-means cluster.
  label_b: (B, max_segments) int32 label of `labels_b` each new segment lies in
    (-1 for unused ids), e.g. its coherent region.
  """
  labels: jax.Array
  valid: jax.Array
  num_segments: jax.Array
  label_a: jax.Array
  label_b: jax.Array


def split_by_regions(labels_a: jax.Array, labels_b: jax.Array, *, max_segments: int,
                     mask: jax.Array | None = None) -> SplitResult:
  """Intersection of two label maps, relabelled to consecutive ids per image.

  Pixels i, j share an output segment iff a_i = a_j and b_i = b_j (used to split each
  k-means region of G0 by the coherent regions G_e). Ids are assigned in lexicographic
  order of (a, b) -- so they do not depend on the numbering of neither input beyond
  that order -- and padded to `max_segments`. Regions beyond `max_segments` are
  dropped (label -1) rather than merged, since merging would break nesting in `a`.

  Args:
    labels_a: (B, H, W) int labels (e.g. k-means clusters); negative = invalid.
    labels_b: (B, H, W) int labels (e.g. coherent regions G_e); negative = invalid.
    max_segments: static size of the output segment table.
    mask: optional (B, H, W) bool of valid pixels.

  Returns:
    `SplitResult`.
  """
  if labels_a.shape != labels_b.shape or labels_a.ndim != 3:
    raise ValueError("split_by_regions: labels_a and labels_b must both be (B, H, W), "
                     f"got {labels_a.shape} and {labels_b.shape}")
  b, h, w = labels_a.shape
  valid = (labels_a >= 0) & (labels_b >= 0)
  if mask is not None:
    valid = valid & mask
  flat_a = labels_a.reshape(b, h * w).astype(jnp.int32)
  flat_b = labels_b.reshape(b, h * w).astype(jnp.int32)
  flat_valid = valid.reshape(b, h * w)
  return jax.vmap(lambda a, c, v: _split_one(a, c, v, max_segments, (h, w)))(
      flat_a, flat_b, flat_valid)


def _split_one(a, b, valid, max_segments, shape) -> SplitResult:
  n = a.shape[0]
  # Invalid pixels sort last (key 1) so they never start a group before valid ones.
  order = jnp.lexsort((b, a, (~valid).astype(jnp.int32)))
  sa, sb, sv = a[order], b[order], valid[order]
  changed = jnp.concatenate(
      [jnp.ones((1,), bool), (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])])
  sorted_ids = jnp.cumsum(changed & sv).astype(jnp.int32) - 1
  sorted_ids = jnp.where(sv, sorted_ids, -1)
  num = jnp.max(sorted_ids) + 1
  sorted_ids = jnp.where(sorted_ids < max_segments, sorted_ids, -1)
  ids = jnp.zeros((n,), jnp.int32).at[order].set(sorted_ids)
  seg_valid = jnp.arange(max_segments) < jnp.minimum(num, max_segments)
  # Every pixel of a segment has the same a and b, so a max-scatter is exact.
  target = jnp.where(ids >= 0, ids, max_segments)
  empty = jnp.full((max_segments,), -1, jnp.int32)
  label_a = empty.at[target].max(a, mode="drop")
  label_b = empty.at[target].max(b, mode="drop")
  return SplitResult(ids.reshape(shape), seg_valid, num.astype(jnp.int32), label_a,
                     label_b)


class BaseGrouping(NamedTuple):
  """HSG's base grouping G0 of a batch, padded to S segments per image.

  labels: (B, H, W) int32 segment ids in [0, S), -1 for invalid pixels.
  prototypes: (B, S, D) unit mean embeddings of the segments (differentiable in the
    embeddings; 0 for unused ids).
  valid: (B, S) bool, True for non-empty segments.
  region: (B, S) int32 coherent region (G_e label) of each segment, -1 for unused ids;
    the k-means cluster id when no regions were given.
  """
  labels: jax.Array
  prototypes: jax.Array
  valid: jax.Array
  region: jax.Array


def base_grouping(embeddings: jax.Array, coherent_regions: jax.Array | None = None, *,
                  grid: tuple[int, int] = (4, 4), num_iterations: int = 15,
                  max_segments: int | None = None, mask: jax.Array | None = None,
                  location_weight: float = 1.0) -> BaseGrouping:
  """G0: spherical k-means of the embeddings, each cluster split by the regions G_e.

  Without `coherent_regions` (inference) G0 is the k-means clustering itself with
  S = grid[0] * grid[1]. With them (training) each k-means cluster is split by the
  coherent regions (`split_by_regions`) into at most `max_segments` segments.

  Args:
    embeddings: (B, H, W, D) pixel embeddings (unit-normalised here).
    coherent_regions: optional (B, H, W) int G_e labels (negative = invalid).
    grid, num_iterations, location_weight: see `spherical_kmeans`.
    max_segments: S when splitting (required with `coherent_regions`).
    mask: optional (B, H, W) bool valid pixels.
  """
  km = spherical_kmeans(jax.lax.stop_gradient(embeddings), grid=grid,
                        num_iterations=num_iterations, mask=mask,
                        location_weight=location_weight)
  b, h, w, d = embeddings.shape
  flat = unit_normalize(embeddings.astype(jnp.float32)).reshape(b, h * w, d)
  if coherent_regions is None:
    k = grid[0] * grid[1]
    labels = km.labels
    region = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (b, k))
  else:
    if max_segments is None:
      raise ValueError("base_grouping: max_segments is required with coherent_regions")
    split = split_by_regions(km.labels, coherent_regions, max_segments=max_segments,
                             mask=mask)
    k, labels, region = max_segments, split.labels, split.label_b
  protos, counts = segment_prototypes(flat, labels.reshape(b, h * w), k)
  valid = counts > 0
  return BaseGrouping(labels, protos, valid, jnp.where(valid, region, -1))
