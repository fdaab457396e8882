"""CAST's graph pooling (Ke, Mo, Yu, ICLR 2024, section 3.2, eqs. 1-3, appendix D.1 Alg. 1).

Graph pooling coarsens the N tokens Z of level l-1 into K tokens of level l:

  C  = FPS([mean(Z); Z], K + 1)[1:] - 1      farthest point sampling (Qi et al. 2017)
  U  = Z + MSA(LN(Z));  U <- U - mean(U) + b  attention block without MLP, learned bias b
  P  = softmax_K(5 * cos(U, U[C]))           (N, K) soft assignments, eq. 1
  Z' = fc1(Z) = Dropout(GELU(Linear(LN(Z))))  width 4 D
  Y  = fc2(P^T Z' / P^T 1) + Z[C]             fc2 = Linear(LN(.)), eq. 3 (f(a, b) = a + MLP(b))
  class token: t <- fc2(fc1(t)) + t

Details from the authors' code (twke18/CAST, `cast_models/graph_pool.py`, read for them):
  * FPS runs over the tokens with their mean prepended as the start point (index 0)
    and padded tokens replaced by that mean (distance 0 to the start, so never
    sampled); the start is dropped from the result. The classification model does not
    L2-normalise tokens before FPS (`l2_normalize_for_fps=False`).
  * FPS is DGL's `farthest_point_sampler` in float64: squared Euclidean distances, a
    running minimum distance to the sampled set, the first index of the maximum.
  * the attention block has LayerNorm eps 1e-6, 12 heads (the GraphPooling default;
    equal to CAST-S/B's heads), qkv bias, an output projection; the bias b starts at
    N(0, 0.01^2). fc1/fc2 use LayerNorm eps 1e-5 (PyTorch's default); fc1's dropout
    is 0.1. GELU is the exact (erf) form.

Faithfulness (deviations and reasons):
  * FPS here runs in the model's dtype (float32 by default), not float64: JAX disables
    float64 unless `jax_enable_x64` is set globally. Distances are computed as
    sum((a - b)^2) like DGL (no |a|^2 - 2ab + |b|^2 cancellation), so only exact or
    near ties (relative gap ~1e-7) can resolve differently. Measured against a float64
    NumPy transcription of DGL's kernel (2026-11-30): identical indices for the tokens
    of all four levels of randomly initialised CAST-S models (2 seeds x 8 SEEDS images
    x 4 levels = 64 samplings) and for 64 random 197 x 384 clouds (65 samples each);
    tests/test_cast_pooling.py checks such a case.
  * padded tokens (mask False) are excluded everywhere: as attention keys, from the
    token mean of the attention block, and from the assignment-weighted means (their
    assignment rows are zeroed). The authors let empty superpixels (zero features)
    take part in all three; with a fixed padded count that would make results depend
    on how much padding a batch has. With no padding both agree exactly.
  * when fewer than K tokens are valid (or tokens coincide), FPS runs out of points at
    non-zero distance and DGL returns the start point, which the authors' code rejects
    with an assertion; here that index is clipped to token 0 (a repeated centroid).
"""
from __future__ import annotations

from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp

ASSIGNMENT_SCALE = 5.0  # kappa of Alg. 1, the authors' `logits * 5`
POOL_DROPOUT = 0.1
_XAVIER = nnx.initializers.xavier_uniform()


def farthest_point_sampling(points: jax.Array, num_samples: int, *,
                            start: int = 0) -> jax.Array:
  """Indices of `num_samples` farthest points of each batch item, `start` first.

  Step i picks the point whose squared Euclidean distance to the nearest already
  sampled point is largest (the first such index on ties), as DGL's
  `farthest_point_sampler`. Fixed shapes: a `lax.fori_loop` of num_samples - 1 steps.

  Args:
    points: (B, N, C) float.
    num_samples: M <= N.
    start: index of the first sample.

  Returns:
    (B, M) int32 indices.
  """
  b, n, _ = points.shape
  if not 0 < num_samples <= n:
    raise ValueError(f"farthest_point_sampling: num_samples={num_samples} must be in [1, {n}] "
                     f"(the number of points)")
  first = jnp.full((b,), start, jnp.int32)
  indices = jnp.zeros((b, num_samples), jnp.int32).at[:, 0].set(first)
  distance = jnp.full((b, n), jnp.inf, points.dtype)

  def step(i, carry):
    indices, distance, last = carry
    last_point = jnp.take_along_axis(points, last[:, None, None], axis=1)  # (B, 1, C)
    distance = jnp.minimum(distance, jnp.sum(jnp.square(points - last_point), axis=-1))
    chosen = jnp.argmax(distance, axis=1).astype(jnp.int32)
    return indices.at[:, i].set(chosen), distance, chosen

  indices, _, _ = jax.lax.fori_loop(1, num_samples, step, (indices, distance, first))
  return indices


def masked_token_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over the valid tokens of (B, N, D) -> (B, 1, D) (all tokens when mask is None)."""
  if mask is None:
    return jnp.mean(x, axis=1, keepdims=True)
  weights = mask.astype(x.dtype)[..., None]
  count = jnp.maximum(jnp.sum(weights, axis=1, keepdims=True), 1.0)
  return jnp.sum(x * weights, axis=1, keepdims=True) / count


def sample_centroid_indices(tokens: jax.Array, mask: jax.Array | None, num_clusters: int, *,
                            l2_normalize: bool = False) -> jax.Array:
  """FPS over [mean; tokens] with padded tokens set to the mean; (B, K) token indices."""
  mean = masked_token_mean(tokens, mask)
  filled = tokens if mask is None else jnp.where(mask[..., None], tokens, mean)
  points = jnp.concatenate([mean, filled], axis=1)
  if l2_normalize:
    points = l2_normalize_rows(points)
  indices = farthest_point_sampling(points, num_clusters + 1, start=0)[:, 1:] - 1
  return jnp.maximum(indices, 0)


def l2_normalize_rows(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) along the last axis (torch.nn.functional.normalize)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def layer_norm(dim: int, epsilon: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(dim, epsilon=epsilon, use_fast_variance=False, rngs=rngs)


def linear(in_features: int, out_features: int, rngs: nnx.Rngs, *,
           kernel_init=_XAVIER) -> nnx.Linear:
  """Linear with the authors' init (xavier-uniform weight, zero bias)."""
  return nnx.Linear(in_features, out_features, kernel_init=kernel_init,
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


def _qkv_init(key, shape, dtype=jnp.float32):
  """Xavier-uniform treating q, k, v as separate (D, D) matrices (MoCo-v3 / CAST init)."""
  fan_in, fan_out = shape[0], shape[1] // 3
  bound = (6.0 / (fan_in + fan_out)) ** 0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class Attention(nnx.Module):
  """timm's multi-head self-attention: fused qkv Linear, softmax(q k^T / sqrt(d)), proj."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"Attention: dim={dim} must be divisible by num_heads={num_heads}")
    self.num_heads = num_heads
    self.qkv = linear(dim, 3 * dim, rngs, kernel_init=_qkv_init)
    self.proj = linear(dim, dim, rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x (B, N, D); mask (B, N) True for valid keys (None: all valid)."""
    b, n, d = x.shape
    head_dim = d // self.num_heads
    # Heads-first (B, H, N, hd) operands: XLA:CPU runs both batched products about
    # twice as fast as on (B, N, H, hd) views (bench/cast.py).
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, hd)
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k) * head_dim ** -0.5
    if mask is not None:
      logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhqk,bhkd->bhqd", weights, v).transpose(0, 2, 1, 3)
    return self.proj(out.reshape(b, n, d))


class CentroidBlock(nnx.Module):
  """U = Z + MSA(LN(Z)); U - mean(U) + bias (Alg. 1; the authors' `centroid_fc`)."""

  def __init__(self, dim: int, num_heads: int, *, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, 1e-6, rngs)
    self.attn = Attention(dim, num_heads, rngs=rngs)
    self.bias = nnx.Param(0.01 * jax.random.normal(rngs.params(), (dim,)))

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.attn(self.norm(x), mask)
    return x - masked_token_mean(x, mask) + self.bias[...]


class PoolingFc1(nnx.Module):
  """LN(eps 1e-5) - Linear(D, 4D) - GELU - Dropout."""

  def __init__(self, dim: int, dropout: float, *, rngs: nnx.Rngs):
    self.norm = layer_norm(dim, 1e-5, rngs)
    self.linear = linear(dim, 4 * dim, rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.dropout(jax.nn.gelu(self.linear(self.norm(x)), approximate=False))


class PoolingFc2(nnx.Module):
  """LN(eps 1e-5) - Linear(4D, D)."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    self.norm = layer_norm(4 * dim, 1e-5, rngs)
    self.linear = linear(4 * dim, dim, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.linear(self.norm(x))


class PoolingOutput(NamedTuple):
  """One graph pooling of N tokens into K.

  class_token: (B, 1, D) updated class token (None with `assign_only`).
  tokens: (B, K, D) coarse tokens Y (None with `assign_only`).
  logits: (B, N, K) 5 cos(U, U[C]); rows of padded tokens are computed but unused.
  assignments: (B, N, K) softmax of the logits, zero rows for padded tokens.
  sampled_indices: (B, K) int32 token indices C chosen by FPS.
  """
  class_token: jax.Array | None
  tokens: jax.Array | None
  logits: jax.Array
  assignments: jax.Array
  sampled_indices: jax.Array


class GraphPooling(nnx.Module):
  """Graph pooling of N tokens into `num_clusters` (module docstring)."""

  def __init__(self, dim: int, num_clusters: int, *, num_heads: int = 12,
               dropout: float = POOL_DROPOUT, l2_normalize_for_fps: bool = False,
               rngs: nnx.Rngs):
    self.num_clusters = num_clusters
    self.l2_normalize_for_fps = l2_normalize_for_fps
    self.centroid_fc = CentroidBlock(dim, num_heads, rngs=rngs)
    self.fc1 = PoolingFc1(dim, dropout, rngs=rngs)
    self.fc2 = PoolingFc2(dim, rngs=rngs)

  def assign(self, tokens: jax.Array, mask: jax.Array | None
             ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(logits, assignments, sampled_indices) of eq. 1 without the token update."""
    if tokens.shape[1] < self.num_clusters:
      raise ValueError(f"GraphPooling: {tokens.shape[1]} tokens cannot be pooled into "
                       f"{self.num_clusters} clusters")
    indices = sample_centroid_indices(jax.lax.stop_gradient(tokens), mask, self.num_clusters,
                                      l2_normalize=self.l2_normalize_for_fps)
    nodes = self.centroid_fc(tokens, mask)
    centroids = jnp.take_along_axis(nodes, indices[..., None], axis=1)
    logits = ASSIGNMENT_SCALE * jnp.einsum(
        "bnd,bkd->bnk", l2_normalize_rows(nodes), l2_normalize_rows(centroids))
    assignments = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
      assignments = assignments * mask[..., None].astype(assignments.dtype)
    return logits, assignments, indices

  def __call__(self, class_token: jax.Array, tokens: jax.Array, mask: jax.Array | None = None,
               *, assign_only: bool = False) -> PoolingOutput:
    """class_token (B, 1, D), tokens (B, N, D), mask (B, N) True = valid (None: all)."""
    logits, assignments, indices = self.assign(tokens, mask)
    if assign_only:
      return PoolingOutput(None, None, logits, assignments, indices)
    # fc1 is row-wise: applied to the class token and the tokens apart, each GELU has
    # one consumer and XLA:CPU fuses it (on their concatenation it materialised erfc's
    # intermediates, 5x slower; bench/cast.py). Dropout draws two masks instead of one.
    hidden_class, hidden = self.fc1(class_token), self.fc1(tokens)
    normalizer = jnp.sum(assignments, axis=1)[..., None]  # (B, K, 1) = P^T 1
    pooled = jnp.einsum("bnk,bnd->bkd", assignments, hidden) / normalizer
    out = self.fc2(jnp.concatenate([hidden_class, pooled], axis=1))
    sampled = jnp.take_along_axis(tokens, indices[..., None], axis=1)
    return PoolingOutput(class_token=out[:, :1] + class_token, tokens=out[:, 1:] + sampled,
                         logits=logits, assignments=assignments, sampled_indices=indices)
