"""Exact t-SNE (van der Maaten & Hinton, JMLR 2008) in JAX, for a few hundred points.

Used for HiPoSeg's Fig. 4 (pixel embeddings coloured by class); O(n^2) memory and time per
iteration, so meant for n up to ~2,000 sampled pixels, not whole images.

  p_{j|i} = exp(-beta_i d_ij) / sum_{k != i} exp(-beta_i d_ik),  d_ij = |x_i - x_j|^2
            with beta_i found by bisection so that the entropy H(P_i) = log(perplexity)
            (natural log: perplexity = exp(H));
  p_ij    = (p_{j|i} + p_{i|j}) / 2n;
  q_ij    = (1 + |y_i - y_j|^2)^-1 / sum_{k != l} (1 + |y_k - y_l|^2)^-1;
  dC/dy_i = 4 sum_j (p_ij - q_ij) (1 + |y_i - y_j|^2)^-1 (y_i - y_j).

Optimisation as in the paper's reference implementation: early exaggeration (p x 12) and
momentum 0.5 for the first 250 iterations, momentum 0.8 after, per-coordinate adaptive gains
(+0.2 when the gradient changes sign, x0.8 otherwise, at least 0.01), learning rate
max(n / 12 / 4, 50) (the "auto" rate of Belkina et al. 2019). Deterministic for a given key.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

EXAGGERATION = 12.0
EXAGGERATION_ITERATIONS = 250
_BISECTION_STEPS = 64


def squared_distances(x: jax.Array) -> jax.Array:
  """(n, n) squared Euclidean distances, exactly 0 on the diagonal, never negative."""
  x = jnp.asarray(x, jnp.float32)
  squared = jnp.sum(x * x, axis=1)
  d = squared[:, None] + squared[None, :] - 2.0 * x @ x.T
  return jnp.maximum(d, 0.0) * (1.0 - jnp.eye(x.shape[0], dtype=d.dtype))


def _row_probabilities(d: jax.Array, log_beta: jax.Array) -> tuple[jax.Array, jax.Array]:
  """p_{j|i} for every row at precision exp(log_beta_i), and each row's entropy (nats)."""
  n = d.shape[0]
  off_diagonal = ~jnp.eye(n, dtype=bool)
  scaled = -d * jnp.exp(log_beta)[:, None]
  scaled = jnp.where(off_diagonal, scaled, -jnp.inf)
  scaled = scaled - jnp.max(scaled, axis=1, keepdims=True)  # stable softmax
  weights = jnp.exp(scaled)
  p = weights / jnp.sum(weights, axis=1, keepdims=True)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=1)
  return p, entropy


@jax.jit
def conditional_probabilities(d: jax.Array, perplexity: float
                              ) -> tuple[jax.Array, jax.Array]:
  """(p_{j|i} (n, n) with a zero diagonal, beta_i (n,)) with H(P_i) = log(perplexity).

  Bisection on log beta_i (the entropy decreases monotonically in beta), all rows at once.
  """
  d = jnp.asarray(d, jnp.float32)
  n = d.shape[0]
  target = jnp.log(perplexity)
  # Work in units of the mean distance so that the bracket [-30, 30] of log beta suffices.
  scale = jnp.maximum(jnp.sum(d) / (n * (n - 1)), 1e-12)
  scaled_d = d / scale

  def step(_, bracket):
    low, high = bracket
    middle = 0.5 * (low + high)
    _, entropy = _row_probabilities(scaled_d, middle)
    too_flat = entropy > target  # beta too small: raise the lower end
    return jnp.where(too_flat, middle, low), jnp.where(too_flat, high, middle)

  low, high = jax.lax.fori_loop(0, _BISECTION_STEPS, step,
                                (jnp.full((n,), -30.0), jnp.full((n,), 30.0)))
  log_beta = 0.5 * (low + high)
  p, _ = _row_probabilities(scaled_d, log_beta)
  return p, jnp.exp(log_beta) / scale


def joint_probabilities(x: jax.Array, perplexity: float) -> jax.Array:
  """Symmetrised p_ij = (p_{j|i} + p_{i|j}) / 2n (sums to 1, zero diagonal)."""
  p, _ = conditional_probabilities(squared_distances(x), perplexity)
  return (p + p.T) / (2.0 * p.shape[0])


def _gradient(p: jax.Array, y: jax.Array) -> jax.Array:
  n = y.shape[0]
  kernel = 1.0 / (1.0 + squared_distances(y))
  kernel = kernel * (1.0 - jnp.eye(n, dtype=kernel.dtype))
  q = jnp.maximum(kernel / jnp.sum(kernel), 1e-12)
  weights = (p - q) * kernel
  return 4.0 * (jnp.sum(weights, axis=1, keepdims=True) * y - weights @ y)


@functools.partial(jax.jit, static_argnames=("num_iterations", "dim"))
def _optimise(p: jax.Array, key: jax.Array, *, num_iterations: int, dim: int) -> jax.Array:
  n = p.shape[0]
  learning_rate = jnp.maximum(n / EXAGGERATION / 4.0, 50.0)
  y0 = 1e-4 * jax.random.normal(key, (n, dim), jnp.float32)

  def step(t, carry):
    y, update, gains = carry
    early = t < EXAGGERATION_ITERATIONS
    grad = _gradient(jnp.where(early, EXAGGERATION, 1.0) * p, y)
    momentum = jnp.where(early, 0.5, 0.8)
    same_sign = jnp.sign(grad) == jnp.sign(update)
    gains = jnp.maximum(jnp.where(same_sign, gains * 0.8, gains + 0.2), 0.01)
    update = momentum * update - learning_rate * gains * grad
    y = y + update
    return y - jnp.mean(y, axis=0), update, gains

  y, _, _ = jax.lax.fori_loop(0, num_iterations, step,
                              (y0, jnp.zeros_like(y0), jnp.ones_like(y0)))
  return y


def tsne(x, *, perplexity: float = 30.0, num_iterations: int = 1000, dim: int = 2,
         seed: int = 0) -> np.ndarray:
  """(n, dim) t-SNE coordinates of the rows of `x` (n, features); needs n > 3 * perplexity
  as usual (a smaller perplexity is taken when n is too small for the requested one)."""
  x = np.asarray(x, np.float32)
  if x.ndim != 2 or x.shape[0] < 4:
    raise ValueError(f"tsne: expected (n >= 4, features) points, got shape {x.shape}")
  perplexity = float(min(perplexity, (x.shape[0] - 1) / 3.0))
  p = jnp.maximum(joint_probabilities(jnp.asarray(x), perplexity), 1e-12)
  y = _optimise(p, jax.random.key(seed), num_iterations=int(num_iterations), dim=int(dim))
  return np.asarray(y)
