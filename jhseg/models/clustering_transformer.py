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
G_{l+1} = argmax_k P_{l+1} (`propagate`), as the paper (sec. 3.3, Fig. 2) and the
authors' code; for evaluation `nested_labels` gives each level-l group the level-(l+1)
label of most of its base segments, so the levels form a hierarchy.

Faithfulness: the default module differs from the authors' in four places, each
reproduced by `authors_code=True` (checked against a PyTorch transcription of their
module in tests/test_clustering_transformer.py):
  * statistics: default mean and population std over the n valid tokens (+ 1e-6 under
    the root for a finite gradient). Theirs (`authors_mean_std`): the padded rows enter
    the sum as (0 - mean)^2 and the divisor is n + 1, torch.std (divisor n - 1) when
    there is no mask (level 2). Their std thus depends on how many padded rows the
    batch has (256 - n), not only on the segments, which is why it is not the default;
  * BatchNorm statistics of the token BatchNorms skip padded tokens by default (theirs
    include them), for the same reason: results do not depend on the padded size;
  * running variances: flax stores the biased batch variance, PyTorch the unbiased one
    (n / (n - 1) larger; 21-30 % for the statistics BatchNorm over a few images);
  * initialisation: default xavier-uniform for every kernel (q, k, v separately, bound
    sqrt(6 / 2m)) and zero biases; theirs draws q, k, v as one packed [3m, m] xavier
    matrix (bound sqrt(6 / 4m)), PyTorch's default U(+-1/sqrt(fan_in)) for the
    feed-forward and statistics-MLP biases and for the two centroid heads' weights.
Not reproduced in either mode: the authors' final top-k re-ordering of the clusters by
their largest logit (a permutation of the cluster ids, no effect on the groupings).

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


def _uniform(bound: float):
  """U(-bound, bound), e.g. PyTorch's default Linear bias / weight bound 1/sqrt(fan_in)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _torch_linear_bias(fan_in: int):
  return _uniform(1.0 / math.sqrt(fan_in))


def _packed_qkv_xavier(dim: int):
  """xavier_uniform of PyTorch's packed in_proj_weight [3m, m]: bound sqrt(6 / 4m)."""
  return _uniform(math.sqrt(6.0 / (4 * dim)))


class _BatchNorm(nnx.BatchNorm):
  """flax BatchNorm whose running variance can follow PyTorch's unbiased update.

  PyTorch stores running_var <- (1 - 0.1) running_var + 0.1 * var * n / (n - 1) (the
  unbiased batch variance, n reduced elements) and normalises with the biased one;
  flax stores the biased one. `unbiased_running_var` adds the difference
  0.1 * var / (n - 1) after flax's update (the authors' code runs on PyTorch).
  """

  def __init__(self, dim: int, *, unbiased_running_var: bool = False, rngs: nnx.Rngs):
    super().__init__(dim, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, rngs=rngs)
    self.unbiased_running_var = unbiased_running_var

  def __call__(self, x, use_running_average=None, *, mask=None):
    training = not (use_running_average if use_running_average is not None
                    else self.use_running_average)
    out = super().__call__(x, use_running_average, mask=mask)
    if training and self.unbiased_running_var:
      axes = tuple(range(x.ndim - 1))
      w = jnp.ones_like(x) if mask is None else mask.astype(x.dtype)
      n = jnp.sum(w, axis=axes)
      mean = jnp.sum(w * x, axis=axes) / jnp.maximum(n, 1.0)
      var = jnp.sum(w * jnp.square(x - mean), axis=axes) / jnp.maximum(n, 1.0)
      extra = (1.0 - self.momentum) * var / jnp.maximum(n - 1.0, 1.0)
      self.var[...] = self.var[...] + jax.lax.stop_gradient(extra)
    return out


class _TokenBatchNorm(nnx.Module):
  """BatchNorm over the feature axis of (B, L, m) tokens.

  Statistics over the valid tokens only (default) or, with `include_padding` (the
  authors' code), over every token of the padded batch.
  """

  def __init__(self, dim: int, *, authors_code: bool = False, rngs: nnx.Rngs):
    self.norm = _BatchNorm(dim, unbiased_running_var=authors_code, rngs=rngs)
    self.include_padding = authors_code

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if mask is None or self.include_padding:
      return self.norm(x)
    return self.norm(x, mask=jnp.broadcast_to(mask[..., None], x.shape))


class _FeedForward(nnx.Module):

  def __init__(self, dim: int, hidden: int, dropout: float, *, authors_code: bool = False,
               rngs: nnx.Rngs):
    bias1 = _torch_linear_bias(dim) if authors_code else nnx.initializers.zeros
    bias2 = _torch_linear_bias(hidden) if authors_code else nnx.initializers.zeros
    self.linear1 = nnx.Linear(dim, hidden, kernel_init=_XAVIER, bias_init=bias1, rngs=rngs)
    self.linear2 = nnx.Linear(hidden, dim, kernel_init=_XAVIER, bias_init=bias2, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear2(self.dropout(jax.nn.relu(self.linear1(x))))


def _attention(dim: int, num_heads: int, dropout: float, rngs: nnx.Rngs,
               authors_code: bool = False):
  attn = nnx.MultiHeadAttention(
      num_heads=num_heads, in_features=dim, qkv_features=dim, out_features=dim,
      dropout_rate=dropout, broadcast_dropout=False, kernel_init=_XAVIER,
      deterministic=False, decode=False, rngs=rngs)
  if authors_code:  # q, k, v drawn as one packed [3m, m] matrix (PyTorch)
    init = _packed_qkv_xavier(dim)
    for proj in (attn.query, attn.key, attn.value):
      proj.kernel[...] = init(rngs.params(), proj.kernel.shape)
  return attn


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
               authors_code: bool = False, rngs: nnx.Rngs):
    self.self_attn = _attention(dim, num_heads, dropout, rngs, authors_code)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.norm1 = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)
    self.ffn = _FeedForward(dim, ffn_dim, dropout, authors_code=authors_code, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
    self.norm2 = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)

  def __call__(self, x, mask=None, pos=None):
    qk = x if pos is None else x + pos
    h = self.self_attn(qk, qk, x, mask=_key_mask(mask, x.shape[1]))
    x = self.norm1(x + self.dropout1(h), mask)
    return self.norm2(x + self.dropout2(self.ffn(x)), mask)


class DecoderLayer(nnx.Module):
  """Post-norm query self-attention, cross-attention to the memory, feed-forward."""

  def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, *,
               authors_code: bool = False, rngs: nnx.Rngs):
    self.self_attn = _attention(dim, num_heads, dropout, rngs, authors_code)
    self.cross_attn = _attention(dim, num_heads, dropout, rngs, authors_code)
    self.dropout1 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout2 = nnx.Dropout(dropout, rngs=rngs)
    self.dropout3 = nnx.Dropout(dropout, rngs=rngs)
    self.norm1 = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)
    self.norm2 = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)
    self.norm3 = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)
    self.ffn = _FeedForward(dim, ffn_dim, dropout, authors_code=authors_code, rngs=rngs)

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

  def __init__(self, dim: int, *, authors_code: bool = False, rngs: nnx.Rngs):
    # The authors' heads sit outside their xavier loop: PyTorch's default U(+-1/sqrt(m)).
    init = _uniform(1.0 / math.sqrt(dim)) if authors_code else _XAVIER
    self.linear = nnx.Linear(dim, dim, use_bias=False, kernel_init=init, rngs=rngs)
    self.norm = _TokenBatchNorm(dim, authors_code=authors_code, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.linear(jax.nn.relu(x)))


def masked_mean_std(y: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Mean and (population) std over the valid tokens of (B, L, m) -> (B, m), (B, m)."""
  w = (jnp.ones(y.shape[:2], y.dtype) if mask is None else mask.astype(y.dtype))[..., None]
  n = jnp.maximum(jnp.sum(w, axis=1), 1.0)
  mean = jnp.sum(w * y, axis=1) / n
  var = jnp.sum(w * jnp.square(y - mean[:, None]), axis=1) / n
  return mean, jnp.sqrt(var + 1e-6)


def authors_mean_std(y: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """The statistics of the authors' `Transformer.forward` (twke18/HSG), (B, m) each.

  With a mask (n valid of L tokens): mean over the valid tokens, and
    std = sqrt( [sum_valid (y - mean)^2 + (L - n) mean^2] / (n + 1) ),
  i.e. the zeroed padded rows enter as (0 - mean)^2 and the divisor is n + 1.
  Without a mask: mean and torch.std (divisor L - 1). No epsilon under the root (as
  theirs; its gradient is infinite only if every token is equal).
  """
  if mask is None:
    length = y.shape[1]
    mean = jnp.mean(y, axis=1)
    var = jnp.sum(jnp.square(y - mean[:, None]), axis=1) / max(length - 1, 1)
    return mean, jnp.sqrt(var)
  w = mask.astype(y.dtype)[..., None]
  n = jnp.sum(w, axis=1)
  mean = jnp.sum(w * y, axis=1) / jnp.maximum(n, 1.0)
  centred = w * y - mean[:, None]
  return mean, jnp.sqrt(jnp.sum(jnp.square(centred), axis=1) / (jnp.maximum(n, 1.0) + 1.0))


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
  """Groups the n_l segments of one level into `num_clusters` clusters (one level).

  `authors_code=True` reproduces the authors' PyTorch module (see the module docstring,
  "Faithfulness"): their statistics formula, BatchNorm statistics over padded tokens,
  PyTorch's unbiased running variance and PyTorch's initialisation.
  """

  def __init__(self, dim: int, num_clusters: int, *, num_heads: int = 4,
               num_encoder_layers: int = 2, num_decoder_layers: int = 2,
               ffn_dim: int | None = None, dropout: float = 0.1,
               authors_code: bool = False, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"ClusteringTransformer: dim={dim} must be divisible by "
                       f"num_heads={num_heads}")
    ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
    self.dim = dim
    self.num_clusters = num_clusters
    self.authors_code = authors_code
    layer_options = dict(authors_code=authors_code, rngs=rngs)
    self.encoder = nnx.List([EncoderLayer(dim, num_heads, ffn_dim, dropout, **layer_options)
                             for _ in range(num_encoder_layers)])
    self.decoder = nnx.List([DecoderLayer(dim, num_heads, ffn_dim, dropout, **layer_options)
                             for _ in range(num_decoder_layers)])
    self.decoder_norm = _TokenBatchNorm(dim, **layer_options)
    # Statistical feature mapping: [mean; std] -> the queries' shared content.
    self.stats_fc1 = nnx.Linear(2 * dim, ffn_dim, use_bias=False, kernel_init=_XAVIER,
                                rngs=rngs)
    self.stats_norm = _BatchNorm(ffn_dim, unbiased_running_var=authors_code, rngs=rngs)
    self.stats_fc2 = nnx.Linear(
        ffn_dim, dim, kernel_init=_XAVIER, rngs=rngs,
        bias_init=_torch_linear_bias(ffn_dim) if authors_code else nnx.initializers.zeros)
    self.queries = nnx.Param(jax.random.normal(rngs.params(), (num_clusters, dim)))
    self.centroid_head = _Head(dim, **layer_options)
    self.feature_head = _Head(dim, **layer_options)

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
    mean, std = (authors_mean_std if self.authors_code else masked_mean_std)(y, mask)
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
  labels: per level, (B, N) int32 hard G_l = argmax_k P_l of the base segments
    (winner-take-all, HSG sec. 3.3); -1 for padded base segments. Not always nested:
    `nested_labels` makes them a hierarchy.
  """
  levels: tuple[LevelOutput, ...]
  assignments: tuple[jax.Array, ...]
  labels: tuple[jax.Array, ...]


def _group_mean(values: jax.Array, labels: jax.Array, num_groups: int) -> jax.Array:
  """Mean of (B, n, m) values per group of (B, n) labels (-1 ignored) -> (B, k, m)."""
  one_hot = jax.nn.one_hot(labels, num_groups, dtype=values.dtype)
  sums = jnp.einsum("bnk,bnm->bkm", one_hot, values)
  return sums / jnp.maximum(jnp.sum(one_hot, axis=1), 1.0)[..., None]


def propagate(parent: jax.Array | None, assignment: jax.Array,
              mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """P_{l+1} = P_l C_{l+1} (HSG eq. 7) and G_{l+1} = argmax_k P_{l+1} (winner-take-all).

  parent: (B, N, n_l) P_l of the N base segments, or None for the first level (P_1 = C_1).
  assignment: (B, n_l, n_{l+1}) C_{l+1} (or (B, N, n_1) for the first level).
  mask: (B, N) valid base segments; invalid rows get P = 0 and label -1.
  Returns (P_{l+1}, G_{l+1} int32).
  """
  p = assignment if parent is None else jnp.einsum("bnj,bjk->bnk", parent, assignment)
  labels = jnp.argmax(p, axis=-1).astype(jnp.int32)
  if mask is not None:
    p = p * mask[..., None].astype(p.dtype)
    labels = jnp.where(mask, labels, -1)
  return p, labels


def nested_labels(labels: Sequence[jax.Array],
                  num_clusters: Sequence[int]) -> tuple[jax.Array, ...]:
  """Make winner-take-all levels nest: each level-l group takes its majority parent.

  G_{l+1} = argmax P_{l+1} need not be a union of G_l groups (two base segments of one
  level-l group can prefer different level-(l+1) clusters), but a hierarchy (UCM) needs
  nested levels. Here, from fine to coarse, every group of the (already nested) level l
  is given the level-(l+1) label held by most of its base segments (ties: smaller id),
  and all its segments take it. The finest level is unchanged, ids stay below n_l,
  -1 stays -1, and levels that already nest are returned as they are.

  labels: per level (B, N) int base-segment labels (`HierarchyOutput.labels`);
  num_clusters: n_l per level.
  """
  out = [labels[0]]
  for finer_k, level, k in zip(num_clusters[:-1], labels[1:], num_clusters[1:]):
    finer = out[-1]
    counts = jnp.einsum("bna,bnc->bac", jax.nn.one_hot(finer, finer_k, dtype=jnp.int32),
                        jax.nn.one_hot(level, k, dtype=jnp.int32))
    parent = jnp.argmax(counts, axis=-1).astype(jnp.int32)             # (B, finer_k)
    out.append(jnp.where(finer >= 0, jnp.take_along_axis(parent, jnp.maximum(finer, 0),
                                                          axis=1), -1))
  return tuple(out)


class HierarchicalClustering(nnx.Module):
  """Stacked clustering transformers: G0 -> G1 (n1 = 8) -> G2 (n2 = 4), as in HSG."""

  def __init__(self, dim: int, *, num_clusters: Sequence[int] = (8, 4),
               num_heads: int = 4, num_encoder_layers: int = 2,
               num_decoder_layers: int = 2, ffn_dim: int | None = None,
               dropout: float = 0.1, authors_code: bool = False, rngs: nnx.Rngs):
    if not num_clusters:
      raise ValueError("HierarchicalClustering: num_clusters must list at least one level")
    self.num_clusters = tuple(int(k) for k in num_clusters)
    self.levels = nnx.List([
        ClusteringTransformer(dim, k, num_heads=num_heads,
                              num_encoder_layers=num_encoder_layers,
                              num_decoder_layers=num_decoder_layers, ffn_dim=ffn_dim,
                              dropout=dropout, authors_code=authors_code, rngs=rngs)
        for k in self.num_clusters])

  def __call__(self, x0: jax.Array, mask: jax.Array | None = None,
               pos: jax.Array | None = None) -> HierarchyOutput:
    """x0: (B, N, m) base segment features X_0; mask: (B, N) bool; pos: (B, N, m)."""
    outputs, assignments, labels = [], [], []
    x, level_mask, level_pos = x0, mask, pos
    p = None
    for k, level in zip(self.num_clusters, self.levels):
      out = level(x, level_mask, level_pos)
      p, g = propagate(p, out.assignment, mask)
      outputs.append(out)
      assignments.append(p)
      labels.append(g)
      # Next level: the k cluster features, all present (as in the authors' code);
      # positions are averaged over this level's hard groups of its own input.
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
