"""HSG losses (Ke et al., "Unsupervised Hierarchical Semantic Segmentation with Multiview
Cosegmentation and Clustering Transformers", CVPR 2022), as pure functions.

Notation: v_i unit pixel embeddings, u_s unit segment prototypes (mean direction of the
pixels of segment s, `jhseg.models.spherical_kmeans.segment_prototypes`), G a grouping
that gives every segment a label, kappa the concentration (inverse temperature).

* `pixel_segment_contrastive_loss`  L_f(G), eq. (3)
* `knn_affinity`, `modularity`, `collapse_regularization`, `centroid_separation_loss`
  and their sum `grouping_loss`          L_g, eq. (8)
* `total_loss`                          eq. (9)

Hyper-parameters the paper leaves to its code were confirmed in the authors'
implementation (twke18/HSG): kappa = 16 for every contrastive term, a k = 2 nearest
neighbour graph over the base segment features X_0, binary edges without self-loops,
and loss weights lambda_E = 1, lambda_F = 0.1 (each level), lambda_G = 1.

Batched inputs have fixed shapes: B images (or views), N pixels or nodes and S segments
per image, padded with boolean masks. Segment labels are compared across the whole
batch, so labels that should match across views of one image (e.g. a coherent region
G_e seen in two views) must carry the same value, and unrelated images different ones.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jhseg.models.spherical_kmeans import unit_normalize

# Finite stand-in for -inf: masked logits keep finite values and zero gradients.
_NEG = -1e30


def _safe_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  w = weights.astype(values.dtype)
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def _masked_logsumexp(logits: jax.Array, mask: jax.Array) -> jax.Array:
  return jax.nn.logsumexp(jnp.where(mask, logits, _NEG), axis=-1)


def pixel_segment_contrastive_loss(
    pixel_embeddings: jax.Array, pixel_segments: jax.Array,
    segment_prototypes: jax.Array, segment_labels: jax.Array, *,
    segment_mask: jax.Array | None = None, pixel_mask: jax.Array | None = None,
    concentration: float = 16.0, exclude_own_segment: bool = True) -> jax.Array:
  r"""Pixel-to-segment contrastive loss L_f(G) (HSG eq. 3, after SegSort).

  For pixel i in segment s(i) with label y_i = G(s(i)), the positive segments S_i^+ are
  the segments of the batch with the same label and the negative ones S_i^- all others
  (section 3.1: across the views of the image and across the batch):

    L_f(G) = mean_i  -log  \frac{\sum_{s \in S_i^+} \exp(\kappa v_i \cdot u_s)}
                                {\sum_{s \in S_i^+ \cup S_i^-} \exp(\kappa v_i \cdot u_s)}

  With `exclude_own_segment` (default, the "SegSort+" rule of the authors' code) S_i^+
  leaves out the pixel's own segment s(i), which contains v_i itself, whenever another
  positive exists; otherwise S_i^+ = {s(i)}.

  Args:
    pixel_embeddings: (B, N, D) pixel embeddings v_i (unit-normalised here).
    pixel_segments: (B, N) int segment id of each pixel in [0, S) within its own image;
      negative ids mark invalid pixels.
    segment_prototypes: (B, S, D) prototypes u_s (unit-normalised here).
    segment_labels: (B, S) int labels G(s), comparable across the batch.
    segment_mask: optional (B, S) bool of real (non-padded, non-empty) segments.
    pixel_mask: optional (B, N) bool of valid pixels.
    concentration: kappa (16 in the authors' configurations).
    exclude_own_segment: see above.

  Returns:
    Scalar mean loss over valid pixels (0 if there are none).

  Example (L_f(G_e) over V views of each image, batch item = one view)::

    g0 = spherical_kmeans.base_grouping(emb, regions, max_segments=S)  # (B,H,W,D)
    labels = g0.region + image_index[:, None] * num_regions  # same image, same label
    loss = pixel_segment_contrastive_loss(
        emb.reshape(B, H * W, D), g0.labels.reshape(B, H * W), g0.prototypes,
        labels, segment_mask=g0.valid)
  """
  if pixel_embeddings.ndim != 3 or segment_prototypes.ndim != 3:
    raise ValueError("pixel_segment_contrastive_loss: pixel_embeddings must be (B, N, D)"
                     " and segment_prototypes (B, S, D), got "
                     f"{pixel_embeddings.shape} and {segment_prototypes.shape}")
  b, n, d = pixel_embeddings.shape
  s = segment_prototypes.shape[1]
  if pixel_segments.shape != (b, n) or segment_labels.shape != (b, s):
    raise ValueError("pixel_segment_contrastive_loss: expected pixel_segments "
                     f"{(b, n)} and segment_labels {(b, s)}, got "
                     f"{pixel_segments.shape} and {segment_labels.shape}")
  seg_valid = (jnp.ones((b, s), bool) if segment_mask is None else segment_mask)
  seg_valid = seg_valid.reshape(b * s)
  labels = segment_labels.reshape(b * s)
  protos = unit_normalize(segment_prototypes.reshape(b * s, d))
  x = unit_normalize(pixel_embeddings.reshape(b * n, d))

  local = pixel_segments.reshape(b, n)
  in_range = (local >= 0) & (local < s)
  own = (jnp.clip(local, 0, s - 1) + s * jnp.arange(b)[:, None]).reshape(b * n)
  pix_valid = in_range.reshape(b * n) & seg_valid[own]
  if pixel_mask is not None:
    pix_valid = pix_valid & pixel_mask.reshape(b * n)

  logits = concentration * (x @ protos.T)                      # (BN, BS)
  same = (labels[None, :] == labels[own][:, None]) & seg_valid[None, :]
  is_own = jnp.arange(b * s)[None, :] == own[:, None]
  positives = same & ~is_own if exclude_own_segment else same
  negatives = ~same & seg_valid[None, :]
  own_logit = jnp.take_along_axis(logits, own[:, None], axis=1)[:, 0]
  numerator = jnp.where(jnp.any(positives, axis=1),
                        _masked_logsumexp(logits, positives), own_logit)
  denominator = jnp.where(jnp.any(negatives, axis=1),
                          jnp.logaddexp(numerator, _masked_logsumexp(logits, negatives)),
                          numerator)
  return _safe_mean(denominator - numerator, pix_valid)


def knn_affinity(features: jax.Array, *, num_neighbors: int = 2,
                 mask: jax.Array | None = None,
                 groups: jax.Array | None = None) -> jax.Array:
  """Sparse binary k-nearest-neighbour affinity A over the nodes of each image.

  A[b, i, j] = 1 iff j != i is among the `num_neighbors` nodes most similar to i
  (cosine similarity), both valid and, if `groups` is given, of the same group; ties
  with the k-th similarity are all kept. Rows are not symmetrised (directed graph), as
  in the authors' code, which builds the graph over the base segment prototypes X_0 of
  an image and its views and restricts neighbours to the same view (`groups` = view id).
  The graph carries no gradient.

  Args:
    features: (B, N, D) node features (e.g. X_0).
    num_neighbors: k (2 in the paper; 4 among views for Cityscapes / KITTI-STEP).
    mask: optional (B, N) bool of valid nodes.
    groups: optional (B, N) int; neighbours are searched within equal groups only.

  Returns:
    (B, N, N) float32 0/1 adjacency.
  """
  if features.ndim != 3:
    raise ValueError(f"knn_affinity: features must be (B, N, D), got {features.shape}")
  if num_neighbors < 1:
    raise ValueError(f"knn_affinity: num_neighbors must be >= 1, got {num_neighbors}")
  b, n, _ = features.shape
  f = unit_normalize(jax.lax.stop_gradient(features).astype(jnp.float32))
  sims = jnp.einsum("bid,bjd->bij", f, f)
  valid = jnp.ones((b, n), bool) if mask is None else mask
  candidate = valid[:, :, None] & valid[:, None, :] & ~jnp.eye(n, dtype=bool)[None]
  if groups is not None:
    candidate = candidate & (groups[:, :, None] == groups[:, None, :])
  sims = jnp.where(candidate, sims, -jnp.inf)
  k = min(num_neighbors, n)
  kth = jax.lax.top_k(sims, k)[0][..., -1:]
  # With fewer than k candidates kth is -inf and every candidate is kept.
  return (candidate & (sims >= kth)).astype(jnp.float32)


def modularity(adjacency: jax.Array, assignments: jax.Array, *,
               node_mask: jax.Array | None = None) -> jax.Array:
  r"""Soft modularity Q of a (B, N, K) assignment C on a (B, N, N) graph A.

    Q = \frac{1}{2m} \mathrm{Tr}\Big(C^T A C - \frac{C^T d_{out} d_{in}^T C}{2m}\Big),
    2m = \sum_{ij} A_{ij},  d_{out} = A 1,  d_{in} = A^T 1.

  For a symmetric A this is HSG eq. (8)'s modularity term (DMoN, Tsitsulin et al.), with
  d d^T; for the directed k-NN graph it is Leicht & Newman's directed modularity, which
  keeps Q's range and meaning (the authors' code uses d_out on both sides and 2 sum A as
  normaliser, a rescaled variant). A graph without edges gets Q = 0.

  Returns:
    (B,) modularity per image.
  """
  c = jnp.asarray(assignments)
  if node_mask is not None:
    c = c * node_mask[..., None].astype(c.dtype)
  a = jnp.asarray(adjacency).astype(c.dtype)
  two_m = jnp.sum(a, axis=(1, 2))
  safe = jnp.maximum(two_m, 1e-12)
  within = jnp.einsum("bik,bij,bjk->b", c, a, c)
  out_k = jnp.einsum("bi,bik->bk", jnp.sum(a, axis=2), c)
  in_k = jnp.einsum("bj,bjk->bk", jnp.sum(a, axis=1), c)
  q = (within - jnp.sum(out_k * in_k, axis=1) / safe) / safe
  return jnp.where(two_m > 0, q, 0.0)


def collapse_regularization(assignments: jax.Array, *,
                            node_mask: jax.Array | None = None) -> jax.Array:
  r"""DMoN collapse regulariser  \frac{\sqrt{K}}{n} \| \sum_i C_i \|_2 - 1  per image.

  0 for perfectly balanced clusters, \sqrt{K} - 1 when every node sits in one cluster;
  n counts the valid nodes. Returns (B,).
  """
  c = jnp.asarray(assignments)
  valid = jnp.ones(c.shape[:2], bool) if node_mask is None else jnp.asarray(node_mask)
  c = c * valid[..., None].astype(c.dtype)
  k = c.shape[-1]
  n = jnp.maximum(jnp.sum(valid, axis=1).astype(c.dtype), 1.0)
  sizes = jnp.sum(c, axis=1)
  norm = jnp.sqrt(jnp.sum(jnp.square(sizes), axis=1) + 1e-12)
  return jnp.sqrt(float(k)) / n * norm - 1.0


def centroid_separation_loss(centroids: jax.Array, *, concentration: float = 16.0,
                             mask: jax.Array | None = None) -> jax.Array:
  r"""Separate the cluster centroids Z of all images of the batch from one another.

    L = mean_j  -\log \frac{\exp(\kappa \hat z_j \cdot \hat z_j)}
                          {\sum_{j'} \exp(\kappa \hat z_j \cdot \hat z_{j'})},
    \hat z = z / \|z\|,

  i.e. the contrastive loss with each centroid its own class, as the authors' code
  applies to the centroids of every level.

  Args:
    centroids: (B, K, D) centroids Z_l.
    concentration: kappa (16).
    mask: optional (B, K) bool of centroids to use.

  Returns:
    Scalar mean over valid centroids.
  """
  b, k, d = centroids.shape
  z = unit_normalize(centroids.reshape(b * k, d))
  valid = jnp.ones((b * k,), bool) if mask is None else mask.reshape(b * k)
  logits = concentration * (z @ z.T)
  lse = _masked_logsumexp(logits, jnp.broadcast_to(valid[None, :], logits.shape))
  return _safe_mean(lse - jnp.diagonal(logits), valid)


def grouping_loss(node_features: jax.Array, assignments: jax.Array,
                  centroids: jax.Array, *, node_mask: jax.Array | None = None,
                  node_groups: jax.Array | None = None, num_neighbors: int = 2,
                  concentration: float = 16.0) -> jax.Array:
  r"""Goodness of grouping L_g of one level (HSG eq. 8).

    L_g = mean_b [ -Q(A, P_l) + (\frac{\sqrt{n_l}}{N} \|\sum_i P_{l,i}\| - 1) ]
          + centroid separation of Z_l,

  with A the k-NN graph over the base segment features X_0 (`knn_affinity`) and P_l
  the soft assignment of the base segments to the n_l clusters of level l.

  Args:
    node_features: (B, N, D) base segment features X_0 (graph nodes).
    assignments: (B, N, n_l) P_l.
    centroids: (B, n_l, D) Z_l.
    node_mask: optional (B, N) bool of valid base segments.
    node_groups: optional (B, N) int restricting neighbours (e.g. view index).
    num_neighbors: k of the graph (2).
    concentration: kappa of the centroid separation (16).

  Returns:
    Scalar loss.
  """
  adjacency = knn_affinity(node_features, num_neighbors=num_neighbors, mask=node_mask,
                           groups=node_groups)
  q = modularity(adjacency, assignments, node_mask=node_mask)
  collapse = collapse_regularization(assignments, node_mask=node_mask)
  separation = centroid_separation_loss(centroids, concentration=concentration)
  return jnp.mean(collapse - q) + separation


def total_loss(*, coherent_contrastive: jax.Array,
               level_contrastive: Sequence[jax.Array],
               level_grouping: Sequence[jax.Array], lambda_e: float = 1.0,
               lambda_f: float = 0.1, lambda_g: float = 1.0) -> jax.Array:
  r"""HSG total loss (eq. 9):

    L = \lambda_E L_f(G_e) + \lambda_F \sum_{l \ge 1} L_f(G_l) + \lambda_G \sum_{l \ge 1} L_g(l).

  Defaults are the authors' training scripts (1, 0.1, 1).
  """
  return (lambda_e * coherent_contrastive
          + lambda_f * sum(level_contrastive, jnp.zeros(()))
          + lambda_g * sum(level_grouping, jnp.zeros(())))
