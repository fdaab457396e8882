"""HSG clustering transformers (Ke et al., CVPR 2022, section 3.3 and supplement).

A clustering transformer maps the n_l segment features X_l of level l to n_{l+1}
coarser clusters:

  Y_l      = Encoder(X_l)                                  (n_l, m) per image
  T        = fc([mean(Y_l); std(Y_l)])                      statistical feature mapping
  D        = Decoder(queries = T + Q_{l+1}, memory = Y_l)   (n_{l+1}, m), Q learned
  X_{l+1}  = fc_x(D),   Z_{l+1} = fc_z(D)                   separate heads
  C_{l+1}  = softmax_k(Y_l Z_{l+1}^T / sqrt(m))             (n_l, n_{l+1}) rows sum to 1
  P_{l+1}  = P_l C_{l+1}                                    soft pixel/segment assignment
  G_{l+1}  = winner-take-all of the assignment              hard grouping

Both encoder and decoder have 2 layers with 4 heads, post-norm residual blocks with
BatchNorm in place of LayerNorm and dropout 0.1 (paper supplement). The details the
paper leaves out follow the authors' code (twke18/HSG, `TransformerClustering` and
`Transformer`), read to confirm them:
  * feed-forward width 2m; xavier-uniform weights; ReLU;
  * the statistics (mean, std over the valid tokens of Y_l) pass through
    Linear(2m, 2m, no bias) - BatchNorm - ReLU - Linear(2m, m) and become the decoder's
    content input, identical for every query; the learned queries Q are added to it
    at every attention (DETR's `query_pos`), i.e. "added to the queries";
  * optional positional embeddings are added to keys/queries of the segment tokens;
  * the decoder ends with a BatchNorm; X_{l+1} and Z_{l+1} each come from
    ReLU - Linear(m, m, no bias) - BatchNorm on the decoder output;
  * BatchNorm momentum 0.1 in PyTorch terms (flax momentum 0.9), eps 1e-5.
Choices of ours, stated where they differ:
  * the std uses the number of valid tokens n (population std, + 1e-6 under the root
    for a finite gradient); the authors' code divides by n + 1;
  * BatchNorm statistics of the encoder skip padded tokens (the authors' code includes
    the zero padding in them), so results do not depend on the padded size;
  * hard groupings are nested by construction: G_{l+1}(s) = argmax_k C_{l+1}[G_l(s), k]
    for each base segment s. This equals winner-take-all on P_{l+1} = P_l C_{l+1} when P_l
    is one-hot; the authors' code takes argmax of the soft product instead, which can
    send two base segments of one level-l group to different level-(l+1) groups.

Shapes are fixed: the n_0 base segments of an image are padded to a static N with a
boolean mask; padded rows of C and P are zero and their labels are -1.

One batch item is one grouping problem. The authors stack the base segments of all
augmented views of an image into one item, so that every level's clusters are shared
by the views (what makes L_f(G_l) contrast across views); do the same here by
concatenating the views' segments along N. BatchNorm in training mode needs B > 1 for
the statistical feature mapping (one vector per item) to carry information.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

from flax import nnx
from flax.nnx.nn import attention as nnx_attention
import jax
import jax.numpy as jnp

# PyTorch BatchNorm defaults (momentum 0.1 on the new batch = flax momentum 0.9).
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
_XAVIER = nnx.initializers.xavier_uniform()


class _TokenBatchNorm(nnx.Module):
  """BatchNorm over the feature axis of (B, L, m) tokens, statistics over valid tokens."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = nnx.BatchNorm(dim, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if mask is None:
      return self.norm(x)
    return self.norm(x, mask=jnp.broadcast_to(mask[..., None], x.shape))


class _FeedForward(nnx.Module):

  def __init__(self, dim: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
    self.linear1 = nnx.Linear(dim, hidden, kernel_init=_XAVIER, rngs=rngs)
    self.linear2 = nnx.Linear(hidden, dim, kernel_init=_XAVIER, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear2(self.dropout(jax.nn.relu(self.linear1(x))))


def _attention(dim: int, num_heads: int, dropout: float, rngs: nnx.Rngs):
  return nnx.MultiHeadAttention(
      num_heads=num_heads, in_features=dim, qkv_features=dim, out_features=dim,
      dropout_rate=dropout, broadcast_dropout=False, kernel_init=_XAVIER,
      deterministic=False, decode=False, rngs=rngs)


def _key_mask(mask: jax.Array | None, num_queries: int) -> jax.Array | None:
  """(B, L) valid-key mask -> (B, 1, Lq, L) attention mask."""
  if mask is None:
    return None
  b, length = mask.shape
  return jnp.broadcast_to(mask[:, None, None, :], (b, 1, num_queries, length))


def _attention_weights(attn: nnx.MultiHeadAttention, inputs_q: jax.Array,
                       inputs_k: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Attention probabilities of `attn` (B, Lq, Lk), averaged over its heads."""
  weights = nnx_attention.dot_product_attention_weights(
      attn.query(inputs_q), attn.key(inputs_k), mask=mask, deterministic=True,
      dtype=attn.dtype, precision=attn.precision)
  return jnp.mean(weights, axis=1)


class EncoderLayer(nnx.Module):
  """Post-norm self-attention block with BatchNorm (DETR layer, LayerNorm -> BatchNorm)."""

  def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, *,
               rngs: nnx.Rngs):
    self.self_attn = _attention(dim, num_heads, dropout, rngs)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.norm1 = _TokenBatchNorm(dim, rngs=rngs)
    self.ffn = _FeedForward(dim, ffn_dim, dropout, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
    self.norm2 = _TokenBatchNorm(dim, rngs=rngs)

  def __call__(self, x, mask=None, pos=None):
    qk = x if pos is None else x + pos
    h = self.self_attn(qk, qk, x, mask=_key_mask(mask, x.shape[1]))
    x = self.norm1(x + self.dropout1(h), mask)
    return self.norm2(x + self.dropout2(self.ffn(x)), mask)


class DecoderLayer(nnx.Module):
  """Post-norm query self-attention, cross-attention to the memory, feed-forward."""

  def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, *,
               rngs: nnx.Rngs):
    self.self_attn = _attention(dim, num_heads, dropout, rngs)
    self.cross_attn = _attention(dim, num_heads, dropout, rngs)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout3 = nnx.Dropout(dropout, rngs=rngs)
    self.norm1 = _TokenBatchNorm(dim, rngs=rngs)
    self.norm2 = _TokenBatchNorm(dim, rngs=rngs)
    self.norm3 = _TokenBatchNorm(dim, rngs=rngs)
    self.ffn = _FeedForward(dim, ffn_dim, dropout, rngs=rngs)

  def __call__(self, t, memory, queries, memory_mask=None, memory_pos=None):
    return self.forward_with_attention(t, memory, queries, memory_mask, memory_pos)[0]

  def forward_with_attention(self, t, memory, queries, memory_mask=None, memory_pos=None):
    """The layer's output and its cross-attention weights (B, Lq, L), mean over heads.

    The weights are recomputed from the cross-attention's own query/key projections
    (softmax(q k^T / sqrt(d_head)) with the key mask, before attention dropout); under
    jit they cost nothing when unused. Masked memory tokens get exactly 0.
    """
    q = t + queries
    t = self.norm1(t + self.dropout1(self.self_attn(q, q, t)))
    key = memory if memory_pos is None else memory + memory_pos
    mask = _key_mask(memory_mask, t.shape[1])
    h = self.cross_attn(t + queries, key, memory, mask=mask)
    weights = _attention_weights(self.cross_attn, t + queries, key, mask)
    if memory_mask is not None:
      weights = weights * memory_mask[:, None, :].astype(weights.dtype)
    t = self.norm2(t + self.dropout2(h))
    return self.norm3(t + self.dropout3(self.ffn(t))), weights


class _Head(nnx.Module):
  """ReLU - Linear(no bias) - BatchNorm, the authors' centroid heads."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(dim, dim, use_bias=False, kernel_init=_XAVIER, rngs=rngs)
    self.norm = _TokenBatchNorm(dim, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.linear(jax.nn.relu(x)))


def masked_mean_std(y: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Mean and (population) std over the valid tokens of (B, L, m) -> (B, m), (B, m)."""
  w = (jnp.ones(y.shape[:2], y.dtype) if mask is None else mask.astype(y.dtype))[..., None]
  n = jnp.maximum(jnp.sum(w, axis=1), 1.0)
  mean = jnp.sum(w * y, axis=1) / n
  var = jnp.sum(w * jnp.square(y - mean[:, None]), axis=1) / n
  return mean, jnp.sqrt(var + 1e-6)


class LevelOutput(NamedTuple):
  """One clustering-transformer level: n = input segments, k = output clusters.

  memory: (B, n, m) encoder output Y_l.
  logits: (B, n, k) Y_l Z^T / sqrt(m).
  assignment: (B, n, k) C_{l+1} = softmax over k; rows of padded segments are 0.
  centroids: (B, k, m) Z_{l+1} (used for the assignment and the separation loss).
  features: (B, k, m) X_{l+1}, the input of the next level.
  labels: (B, n) int32 argmax_k C_{l+1}, -1 for padded segments.
  attention: (B, k, n) cross-attention weights of the last decoder layer (queries over
    the input segments Y_l), averaged over heads, before attention dropout; each row
    sums to 1 over the valid segments, padded segments get 0. For visualisation.
  """
  memory: jax.Array
  logits: jax.Array
  assignment: jax.Array
  centroids: jax.Array
  features: jax.Array
  labels: jax.Array
  attention: jax.Array | None = None


class ClusteringTransformer(nnx.Module):
  """Groups the n_l segments of one level into `num_clusters` clusters (one level)."""

  def __init__(self, dim: int, num_clusters: int, *, num_heads: int = 4,
               num_encoder_layers: int = 2, num_decoder_layers: int = 2,
               ffn_dim: int | None = None, dropout: float = 0.1, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"ClusteringTransformer: dim={dim} must be divisible by "
                       f"num_heads={num_heads}")
    ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
    self.dim = dim
    self.num_clusters = num_clusters
    self.encoder = nnx.List([EncoderLayer(dim, num_heads, ffn_dim, dropout, rngs=rngs)
                             for _ in range(num_encoder_layers)])
    self.decoder = nnx.List([DecoderLayer(dim, num_heads, ffn_dim, dropout, rngs=rngs)
                             for _ in range(num_decoder_layers)])
    self.decoder_norm = _TokenBatchNorm(dim, rngs=rngs)
    # Statistical feature mapping: [mean; std] -> the queries' shared content.
    self.stats_fc1 = nnx.Linear(2 * dim, ffn_dim, use_bias=False, kernel_init=_XAVIER,
                                rngs=rngs)
    self.stats_norm = nnx.BatchNorm(ffn_dim, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                                    rngs=rngs)
    self.stats_fc2 = nnx.Linear(ffn_dim, dim, kernel_init=_XAVIER, rngs=rngs)
    self.queries = nnx.Param(jax.random.normal(rngs.params(), (num_clusters, dim)))
    self.centroid_head = _Head(dim, rngs=rngs)
    self.feature_head = _Head(dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               pos: jax.Array | None = None) -> LevelOutput:
    """x: (B, n, m) segment features; mask: (B, n) bool valid; pos: (B, n, m) or None."""
    if x.ndim != 3 or x.shape[-1] != self.dim:
      raise ValueError(f"ClusteringTransformer: x must be (B, n, {self.dim}), got "
                       f"{x.shape}")
    if mask is not None and mask.shape != x.shape[:2]:
      raise ValueError(f"ClusteringTransformer: mask must be {x.shape[:2]}, got "
                       f"{mask.shape}")
    b = x.shape[0]
    y = x
    for layer in self.encoder:
      y = layer(y, mask, pos)
    mean, std = masked_mean_std(y, mask)
    t = self.stats_fc2(jax.nn.relu(self.stats_norm(
        self.stats_fc1(jnp.concatenate([mean, std], axis=-1)))))
    t = jnp.broadcast_to(t[:, None, :], (b, self.num_clusters, self.dim))
    queries = jnp.broadcast_to(self.queries[...][None], t.shape)
    attention = None
    for layer in self.decoder:
      t, attention = layer.forward_with_attention(t, y, queries, mask, pos)
    t = self.decoder_norm(t)
    z = self.centroid_head(t)
    features = self.feature_head(t)
    logits = jnp.einsum("bnm,bkm->bnk", y, z) / math.sqrt(self.dim)
    assignment = jax.nn.softmax(logits, axis=-1)
    labels = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    if mask is not None:
      assignment = assignment * mask[..., None].astype(assignment.dtype)
      labels = jnp.where(mask, labels, -1)
    return LevelOutput(y, logits, assignment, z, features, labels, attention)


class HierarchyOutput(NamedTuple):
  """Clustering of the N base segments (G0) through all levels l = 1..L.

  levels: the `LevelOutput` of each clustering transformer.
  assignments: per level, (B, N, n_l) soft P_l of the base segments,
    P_1 = C_1 and P_{l+1} = P_l C_{l+1}; rows of padded base segments are 0.
  labels: per level, (B, N) int32 hard G_l of the base segments, nested across
    levels; -1 for padded base segments.
  """
  levels: tuple[LevelOutput, ...]
  assignments: tuple[jax.Array, ...]
  labels: tuple[jax.Array, ...]


def _group_mean(values: jax.Array, labels: jax.Array, num_groups: int) -> jax.Array:
  """Mean of (B, n, m) values per group of (B, n) labels (-1 ignored) -> (B, k, m)."""
  one_hot = jax.nn.one_hot(labels, num_groups, dtype=values.dtype)
  sums = jnp.einsum("bnk,bnm->bkm", one_hot, values)
  return sums / jnp.maximum(jnp.sum(one_hot, axis=1), 1.0)[..., None]


class HierarchicalClustering(nnx.Module):
  """Stacked clustering transformers: G0 -> G1 (n1 = 8) -> G2 (n2 = 4), as in HSG."""

  def __init__(self, dim: int, *, num_clusters: Sequence[int] = (8, 4),
               num_heads: int = 4, num_encoder_layers: int = 2,
               num_decoder_layers: int = 2, ffn_dim: int | None = None,
               dropout: float = 0.1, rngs: nnx.Rngs):
    if not num_clusters:
      raise ValueError("HierarchicalClustering: num_clusters must list at least one level")
    self.num_clusters = tuple(int(k) for k in num_clusters)
    self.levels = nnx.List([
        ClusteringTransformer(dim, k, num_heads=num_heads,
                              num_encoder_layers=num_encoder_layers,
                              num_decoder_layers=num_decoder_layers, ffn_dim=ffn_dim,
                              dropout=dropout, rngs=rngs)
        for k in self.num_clusters])

  def __call__(self, x0: jax.Array, mask: jax.Array | None = None,
               pos: jax.Array | None = None) -> HierarchyOutput:
    """x0: (B, N, m) base segment features X_0; mask: (B, N) bool; pos: (B, N, m)."""
    outputs, assignments, labels = [], [], []
    x, level_mask, level_pos = x0, mask, pos
    p, g = None, None
    for k, level in zip(self.num_clusters, self.levels):
      out = level(x, level_mask, level_pos)
      if p is None:
        p, g = out.assignment, out.labels
      else:
        p = jnp.einsum("bnj,bjk->bnk", p, out.assignment)
        # Winner-take-all on the hard parent keeps the levels nested.
        g = jnp.where(g >= 0, jnp.take_along_axis(
            out.labels, jnp.maximum(g, 0), axis=1), -1)
      outputs.append(out)
      assignments.append(p)
      labels.append(g)
      # Next level: the k cluster features, all present (as in the authors' code);
      # positions are averaged over the hard groups of this level.
      if level_pos is not None:
        level_pos = _group_mean(level_pos, out.labels, k)
      x, level_mask = out.features, None
    return HierarchyOutput(tuple(outputs), tuple(assignments), tuple(labels))


def pixel_labels(segment_map: jax.Array, segment_labels: jax.Array) -> jax.Array:
  """Propagate per-segment labels to pixels: out[b, i, j] = segment_labels[b, map[b, i, j]].

  segment_map: (B, H, W) int base segment ids (G0), negative for invalid pixels.
  segment_labels: (B, N) int labels of the base segments (e.g. `HierarchyOutput.labels`).
  Returns (B, H, W) int32 with -1 where the pixel or its segment is invalid.
  """
  b = segment_map.shape[0]
  flat = segment_map.reshape(b, -1)
  out = jnp.take_along_axis(segment_labels, jnp.clip(flat, 0, segment_labels.shape[1] - 1),
                            axis=1)
  out = jnp.where(flat >= 0, out, -1).astype(jnp.int32)
  return out.reshape(segment_map.shape)
