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
implementation (twke18/HSG): kappa = 16 for every contrastive term, a k-nearest
neighbour graph over the base segment features X_0 (k = 2 in every view of an image,
or k = 4 over all views for Cityscapes / KITTI-STEP), binary directed edges without
self-loops, and loss weights lambda_E = 1, lambda_F = 0.1 (each level), lambda_G = 1.

Faithfulness (deliberate differences from the paper / the authors' code):
  * modularity: the authors' normaliser 2 sum(A) and out-degrees on both sides
    (`modularity`), which is how their code reads eq. 8 on the directed k-NN graph;
    the loss adds -Q where they add 1 - Q (a constant).
  * collapse regulariser: the paper's n = number of valid base segments by default;
    the authors' division by the padded length is `normaliser="padded_length"`
    (weaker by n_0 / 256 in their setting; a reproduction option). The constant -1
    of eq. 8, which their code omits, is kept.
  * centroid separation: as the authors' code, over the centroids of all images of
    the batch (eq. 8 writes the sum within one image); kappa = 16 as their scripts
    (eq. 8 shows no temperature).

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
                 groups: jax.Array | None = None,
                 num_groups: int | None = None) -> jax.Array:
  """Sparse binary k-nearest-neighbour affinity A over the nodes of each image.

  Without `groups`: A[b, i, j] = 1 iff j != i is among the `num_neighbors` valid nodes
  most similar to i (cosine). With `groups` (e.g. the view of each node): for every
  group g, i keeps its `num_neighbors` most similar nodes *of g* (all of g's other
  nodes if it has fewer), and A is the union over the groups, so every node has
  neighbours in its own view and in each other view of the image (HSG supplement
  sec. 5.7: "k = 2 within an image and its augmented views, respectively", which
  puts cross-view edges into the modularity; the authors' `affinity_matrix_as_attention`
  loops over the groups the same way). Ties with a group's k-th similarity are all
  kept. Rows are not symmetrised (a directed graph, as the authors'). No gradient.

  Settings (supplement sec. 5.7): MSCOCO / VOC / COCO-stuff / Potsdam k = 2 with the
  view index as `groups`; Cityscapes / KITTI-STEP k = 4 over all the segments of an
  image's views together (`groups=None`, the authors pass no labels there).

  Args:
    features: (B, N, D) node features (e.g. X_0).
    num_neighbors: k.
    mask: optional (B, N) bool of valid nodes.
    groups: optional (B, N) int group of each node (view index) in [0, num_groups);
      k neighbours per group. Nodes with other ids are never neighbours.
    num_groups: static number of groups (required with `groups`).

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
  k = min(num_neighbors, n)
  if groups is None:
    return _top_k_edges(sims, candidate, k)
  if num_groups is None or num_groups < 1:
    raise ValueError("knn_affinity: with `groups`, pass num_groups (the number of distinct "
                     f"group ids, e.g. the number of views); got {num_groups}")
  edges = jnp.zeros((b, n, n), jnp.float32)
  for g in range(num_groups):  # static: one top-k per group, then the union
    in_group = candidate & (groups == g)[:, None, :]
    edges = jnp.maximum(edges, _top_k_edges(sims, in_group, k))
  return edges


def _top_k_edges(sims: jax.Array, candidate: jax.Array, k: int) -> jax.Array:
  sims = jnp.where(candidate, sims, -jnp.inf)
  kth = jax.lax.top_k(sims, k)[0][..., -1:]
  # With fewer than k candidates kth is -inf and every candidate is kept.
  return (candidate & (sims >= kth)).astype(jnp.float32)


def modularity(adjacency: jax.Array, assignments: jax.Array, *,
               node_mask: jax.Array | None = None) -> jax.Array:
  r"""Soft modularity Q of a (B, N, K) assignment C on a (B, N, N) graph A, with the
  normaliser of the authors' code (twke18/HSG `dmon_pool_loss`):

    Q = \frac{1}{2 \Sigma A} \Big[\mathrm{Tr}(C^T A C)
        - \frac{\mathrm{Tr}(C^T d d^T C)}{2 \Sigma A}\Big],
    \Sigma A = \sum_{ij} A_{ij},   d = A 1  (out-degrees, on both sides).

  HSG eq. (8) writes the DMoN term with e the number of edges and D the degrees; for
  the directed k-NN graph the authors' code reads 2e as 2 \Sigma A and D as the
  out-degrees, which is what this computes (the eq. 8 loss term is -Q; the authors
  log 1 - Q, the same up to a constant). A perfect split of two disjoint edges
  (\Sigma A = 4) scores (4 - 8/8)/8 = 0.375. A graph without edges gets Q = 0.

  Returns:
    (B,) modularity per image.
  """
  c = jnp.asarray(assignments)
  if node_mask is not None:
    c = c * node_mask[..., None].astype(c.dtype)
  a = jnp.asarray(adjacency).astype(c.dtype)
  normaliser = 2.0 * jnp.sum(a, axis=(1, 2))
  safe = jnp.maximum(normaliser, 1e-12)
  within = jnp.einsum("bik,bij,bjk->b", c, a, c)
  degree_k = jnp.einsum("bi,bik->bk", jnp.sum(a, axis=2), c)      # d^T C
  q = (within - jnp.sum(jnp.square(degree_k), axis=1) / safe) / safe
  return jnp.where(normaliser > 0, q, 0.0)


COLLAPSE_NORMALISERS = ("valid_nodes", "padded_length")


def collapse_regularization(assignments: jax.Array, *,
                            node_mask: jax.Array | None = None,
                            normaliser: str = "valid_nodes") -> jax.Array:
  r"""Collapse regulariser of HSG eq. (8)  \frac{\sqrt{n_l}}{n} \| 1^T C \|_2 - 1  per image.

  0 for perfectly balanced clusters, \sqrt{n_l} - 1 when every node sits in one cluster.
  `normaliser` picks n:
    * "valid_nodes" (default, the paper): n = n_0, the number of valid base segments;
    * "padded_length" (the authors' code, for reproduction runs): n = N, the padded
      length (256 in their code), whatever the number of valid segments, so the term
      is weaker by n_0 / N. (Their code also omits the constant -1.)

  Returns (B,).
  """
  if normaliser not in COLLAPSE_NORMALISERS:
    raise ValueError(f"collapse_regularization: normaliser must be one of "
                     f"{COLLAPSE_NORMALISERS}, got {normaliser!r}")
  c = jnp.asarray(assignments)
  valid = jnp.ones(c.shape[:2], bool) if node_mask is None else jnp.asarray(node_mask)
  c = c * valid[..., None].astype(c.dtype)
  k = c.shape[-1]
  if normaliser == "valid_nodes":
    n = jnp.maximum(jnp.sum(valid, axis=1).astype(c.dtype), 1.0)
  else:
    n = jnp.full(c.shape[:1], float(c.shape[1]), c.dtype)
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
                  node_groups: jax.Array | None = None, num_groups: int | None = None,
                  num_neighbors: int = 2, concentration: float = 16.0,
                  collapse_normaliser: str = "valid_nodes") -> jax.Array:
  r"""Goodness of grouping L_g of one level (HSG eq. 8).

    L_g = mean_b [ -Q(A, P_l) + (\frac{\sqrt{n_l}}{n} \|1^T P_l\| - 1) ]
          + centroid separation of Z_l,

  with A the k-NN graph over the base segment features X_0 (`knn_affinity`), Q the
  modularity with the authors' normaliser (`modularity`), n as `collapse_normaliser`
  (`collapse_regularization`) and P_l the soft assignment of the base segments to the
  n_l clusters of level l.

  Args:
    node_features: (B, N, D) base segment features X_0 (graph nodes).
    assignments: (B, N, n_l) P_l.
    centroids: (B, n_l, D) Z_l.
    node_mask: optional (B, N) bool of valid base segments.
    node_groups: optional (B, N) int view of each node: k neighbours in every view
      (`knn_affinity`); None: k over all nodes.
    num_groups: number of views (required with `node_groups`).
    num_neighbors: k of the graph (2; 4 for Cityscapes / KITTI-STEP).
    concentration: kappa of the centroid separation (16).
    collapse_normaliser: "valid_nodes" (paper) or "padded_length" (authors' code).

  Returns:
    Scalar loss.
  """
  adjacency = knn_affinity(node_features, num_neighbors=num_neighbors, mask=node_mask,
                           groups=node_groups, num_groups=num_groups)
  q = modularity(adjacency, assignments, node_mask=node_mask)
  collapse = collapse_regularization(assignments, node_mask=node_mask,
                                     normaliser=collapse_normaliser)
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
