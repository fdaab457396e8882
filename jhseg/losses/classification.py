"""Image classification losses (CAST's DeiT training; Ke, Mo, Yu, ICLR 2024, Table 12).

  soft_target_cross_entropy(z, y) = mean_i sum_k -y_ik log softmax(z_i)_k

With mixup / cutmix the targets y are the mixed, label-smoothed rows of
`jhseg.data.mixing.mix_batch` (timm's `SoftTargetCrossEntropy`); with one-hot rows
smoothed by eps it is the label-smoothed cross-entropy of Szegedy et al. (2016)
(timm's `LabelSmoothingCrossEntropy`), and with plain one-hot rows the usual one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def soft_target_cross_entropy(logits: jax.Array, targets: jax.Array, *,
                              where: jax.Array | None = None) -> jax.Array:
  """Mean over rows of sum_k -targets_k log_softmax(logits)_k.

  Args:
    logits: (B, K) float.
    targets: (B, K) float, each row a distribution (not checked under jit).
    where: optional (B,) bool; only True rows are averaged (padding of a fixed batch).

  Returns:
    float32 scalar.
  """
  if logits.shape != targets.shape:
    raise ValueError(f"soft_target_cross_entropy: logits {logits.shape} and targets "
                     f"{targets.shape} must have the same (B, K) shape")
  per_row = -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)
  if where is None:
    return jnp.mean(per_row)
  weights = where.astype(jnp.float32)
  return jnp.sum(per_row * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """(B,) bool: the label is among the k largest logits (ties broken by index)."""
  top = jax.lax.top_k(logits, k)[1]
  return jnp.any(top == labels[:, None], axis=-1)
