"""MoCo-v3 around a CAST encoder (Chen, Xie, He, ICCV 2021; CAST paper appendix E.4, Table 11).

CAST is trained self-supervised with MoCo-v3 (Ke, Mo, Yu, ICLR 2024, section 4 and Table 11;
the authors' `moco-v3/suppix_utils/builder.py`, read for the details):

  q_v = predictor(projector(f(x_v)))             f: the CAST encoder (`CASTOutput.embedding`)
  k_v = momentum_projector(momentum_f(x_v))      no gradient
  L   = ctr(q_1, k_2) + ctr(q_2, k_1)
  ctr(q, k) = 2 tau * CE(softmax_j(<q_i, k_j> / tau), i)   q, k L2-normalised rows, tau = 0.2
  theta_momentum <- m theta_momentum + (1 - m) theta        after each optimizer update
  m(p) = 1 - (1 + cos(pi p)) (1 - m_0) / 2                  p = training progress, m_0 = 0.99

The projector is a 3-layer MLP (Linear without bias - BatchNorm - ReLU, twice, then Linear -
BatchNorm without scale and bias), hidden width 4096, output 256; the predictor the 2-layer
version (256 -> 4096 -> 256). The momentum branch is a copy of encoder + projector made at
initialisation; only its parameters are averaged (its BatchNorm statistics follow its own
forward passes, as `parameters()` in the authors' update skips buffers).

Faithfulness:
  * the keys are the whole global batch (the authors all-gather them over GPUs: the same set
    of negatives); the loss is the mean over the global batch, which is what averaging their
    per-GPU losses and gradients gives.
  * BatchNorm of the MLP heads normalises over the global batch of a view (the authors'
    SyncBatchNorm); each view is a separate forward pass, as theirs.
  * Linear layers of the heads use PyTorch's default init (uniform, variance 1/(3 fan_in)),
    as the authors (their `_build_mlp` keeps it).
"""
from __future__ import annotations

import math
from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jhseg.models import cast as cast_lib

MOCO_DIM = 256
MOCO_MLP_DIM = 4096
MOCO_TEMPERATURE = 0.2
MOCO_MOMENTUM = 0.99
MOMENTUM_BRANCH = ("momentum_encoder", "momentum_projector")
_TORCH_LINEAR_INIT = nnx.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform")


class MlpHead(nnx.Module):
  """MoCo-v3's `_build_mlp`: (Linear(no bias)-BN-ReLU) x (L-1), Linear(no bias)-BN(no affine)."""

  def __init__(self, num_layers: int, in_dim: int, hidden_dim: int, out_dim: int, *,
               rngs: nnx.Rngs):
    if num_layers < 1:
      raise ValueError(f"MlpHead: num_layers={num_layers} must be >= 1")
    dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
    self.linears = nnx.List([
        nnx.Linear(dims[i], dims[i + 1], use_bias=False, kernel_init=_TORCH_LINEAR_INIT,
                   rngs=rngs) for i in range(num_layers)])
    last = num_layers - 1
    self.norms = nnx.List([
        nnx.BatchNorm(dims[i + 1], momentum=0.9, epsilon=1e-5, use_scale=i < last,
                      use_bias=i < last, rngs=rngs) for i in range(num_layers)])

  def __call__(self, x: jax.Array) -> jax.Array:
    last = len(self.linears) - 1
    for i, (linear, norm) in enumerate(zip(self.linears, self.norms)):
      x = norm(linear(x))
      if i < last:
        x = jax.nn.relu(x)
    return x


def _copy(module: nnx.Module) -> nnx.Module:
  """A deep copy holding its own buffers (a clone shares the arrays, which the engine's
  donated train step refuses to receive twice)."""
  copy = nnx.clone(module)
  nnx.update(copy, jax.tree.map(lambda x: jnp.array(x, copy=True), nnx.state(copy)))
  return copy


class MoCoCAST(nnx.Module):
  """Encoder, projector, predictor and their momentum copies (module docstring).

  `encoder` is a plain `jhseg.models.cast.CAST`: after training, `model.encoder` is the
  network whose hierarchy and embedding the evaluations read.
  """

  def __init__(self, config: cast_lib.CASTConfig, *, dim: int = MOCO_DIM,
               mlp_dim: int = MOCO_MLP_DIM, drop_path_rate: float = 0.0, rngs: nnx.Rngs):
    self.encoder = cast_lib.CAST(config, drop_path_rate=drop_path_rate, rngs=rngs)
    self.projector = MlpHead(3, config.dim, mlp_dim, dim, rngs=rngs)
    self.predictor = MlpHead(2, dim, mlp_dim, dim, rngs=rngs)
    # The authors build a second encoder and copy the parameters into it.
    self.momentum_encoder = _copy(self.encoder)
    self.momentum_projector = _copy(self.projector)

  def queries(self, images: jax.Array, superpixels: jax.Array, mask: jax.Array) -> jax.Array:
    """q = predictor(projector(f(x))): (B, dim)."""
    return self.predictor(self.projector(self.encoder(images, superpixels, mask).embedding))

  def keys(self, images: jax.Array, superpixels: jax.Array, mask: jax.Array) -> jax.Array:
    """k = momentum projector(momentum f(x)) without gradient: (B, dim)."""
    embedding = self.momentum_encoder(images, superpixels, mask).embedding
    return jax.lax.stop_gradient(self.momentum_projector(embedding))


def is_momentum_branch(path: Sequence, value=None) -> bool:
  """nnx filter: the variables of the momentum encoder and projector."""
  del value
  return bool(path) and path[0] in MOMENTUM_BRANCH


def cosine_momentum(progress: jax.Array, base: float = MOCO_MOMENTUM) -> jax.Array:
  """m(p) = 1 - (1 + cos(pi p)) (1 - base) / 2: base at p = 0, 1 at p = 1 (MoCo-v3's
  `adjust_moco_momentum` with p = epoch / epochs)."""
  return 1.0 - 0.5 * (1.0 + jnp.cos(math.pi * progress)) * (1.0 - base)


def update_momentum_branch(model: MoCoCAST, momentum: jax.Array) -> None:
  """theta_m <- m theta_m + (1 - m) theta for the parameters of encoder and projector."""
  for source, target in ((model.encoder, model.momentum_encoder),
                         (model.projector, model.momentum_projector)):
    online = nnx.state(source, nnx.Param)
    averaged = jax.tree.map(lambda t, s: momentum * t + (1.0 - momentum) * s,
                            nnx.state(target, nnx.Param), online)
    nnx.update(target, averaged)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(|x|, eps) along the last axis (torch.nn.functional.normalize)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def contrastive_loss(queries: jax.Array, keys: jax.Array, *,
                     temperature: float = MOCO_TEMPERATURE) -> jax.Array:
  """MoCo-v3's InfoNCE with the batch as negatives, scaled by 2 tau.

    l_ij = <q_i / |q_i|, k_j / |k_j|> / tau
    L = 2 tau * mean_i [ -l_ii + log sum_j exp(l_ij) ]

  Args:
    queries: (N, C) predictions of one view.
    keys: (N, C) momentum targets of the other view (row i is the positive of query i).
    temperature: tau (0.2 in CAST's Table 11).
  """
  if queries.shape != keys.shape or queries.ndim != 2:
    raise ValueError(f"contrastive_loss: queries {queries.shape} and keys {keys.shape} must "
                     f"both be (N, C)")
  logits = l2_normalize(queries) @ l2_normalize(keys).T / temperature
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return -2.0 * temperature * jnp.mean(jnp.diagonal(log_probs))


def retrieval_accuracy(queries: jax.Array, keys: jax.Array) -> jax.Array:
  """Fraction of queries whose most similar key is their positive (a training monitor)."""
  similarity = l2_normalize(queries) @ l2_normalize(keys).T
  return jnp.mean(jnp.argmax(similarity, axis=-1) == jnp.arange(queries.shape[0]))


def moco_cast_model(name: str, *, dim: int = MOCO_DIM, mlp_dim: int = MOCO_MLP_DIM,
                    drop_path_rate: float = 0.0, rngs: nnx.Rngs) -> MoCoCAST:
  """MoCoCAST around a CAST of a named size (`jhseg.models.cast.CAST_CONFIGS`)."""
  return MoCoCAST(cast_lib.cast_config(name), dim=dim, mlp_dim=mlp_dim,
                  drop_path_rate=drop_path_rate, rngs=rngs)
