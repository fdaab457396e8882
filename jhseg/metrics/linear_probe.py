"""Linear probing of frozen features (MoCo-v3's protocol, used by CAST's Table 4).

CAST (Ke, Mo, Yu, ICLR 2024, appendix E.5) reads a self-supervised encoder by training a
linear classifier on its frozen image embedding, as MoCo-v3 (Chen, Xie, He, ICCV 2021);
the authors' `moco-v3/main_lincls_suppix.py` gives the details:

  logits = x W + b                     x: the encoder's normalised class token (D,)
  W ~ N(0, 0.01^2), b = 0              the classifier's initialisation
  L = mean over the mini-batch of CE(softmax(logits), y)
  SGD with momentum 0.9 (PyTorch's form: v <- mu v + g + wd w; w <- w - lr v),
  weight decay 0, lr = base_lr x batch / 256, cosine over epochs, constant within one:
  lr_e = lr / 2 (1 + cos(pi e / epochs)),  e = 0 .. epochs - 1
  90 epochs, every epoch a new random order; the last mini-batch of an epoch may be
  smaller (PyTorch's DataLoader keeps it).
  Paper: IN-100 base lr 0.8 with batch 256; IN-1K base lr 30 with batch 1024.

Here the features are computed once and cached (`train_linear_probe` takes them as an
array): the whole probe training is one jitted `lax.scan` over mini-batches of fixed
shape, the short last batch of an epoch padded and masked out of its mean.

Faithfulness: the authors recompute the embedding of a new random-resized-crop and flip
of every image in every epoch; cached features of the evaluation view (no augmentation)
are the CPU-sized version (the classifier sees each image's one view 90 times).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

INIT_STD = 0.01


@dataclasses.dataclass(frozen=True)
class ProbeOptions:
  """The probe's training settings (defaults: the paper's IN-100 setting)."""
  epochs: int = 90
  batch_size: int = 256
  base_learning_rate: float = 0.8
  momentum: float = 0.9
  weight_decay: float = 0.0

  @property
  def learning_rate(self) -> float:
    """MoCo-v3's linear scaling rule, base_lr x batch / 256."""
    return self.base_learning_rate * self.batch_size / 256


def epoch_orders(key: jax.Array, num_examples: int, options: ProbeOptions) -> jax.Array:
  """(epochs, steps_per_epoch x batch) int32 example orders, one permutation per epoch,
  padded with -1 to whole mini-batches (the last batch of an epoch is the short one)."""
  steps = math.ceil(num_examples / options.batch_size)
  pad = steps * options.batch_size - num_examples
  keys = jax.random.split(key, options.epochs)
  orders = jax.vmap(lambda k: jax.random.permutation(k, num_examples))(keys).astype(jnp.int32)
  return jnp.pad(orders, ((0, 0), (0, pad)), constant_values=-1)


def _epoch_rates(options: ProbeOptions) -> np.ndarray:
  e = np.arange(options.epochs)
  return options.learning_rate * 0.5 * (1.0 + np.cos(np.pi * e / options.epochs))


def init_classifier(key: jax.Array, dim: int, num_classes: int) -> dict[str, jax.Array]:
  """W ~ N(0, 0.01^2) (dim, classes), b = 0: the authors' initialisation of the head."""
  return {"kernel": INIT_STD * jax.random.normal(key, (dim, num_classes), jnp.float32),
          "bias": jnp.zeros((num_classes,), jnp.float32)}


def _batch_loss(params, features, labels, valid):
  logits = features @ params["kernel"] + params["bias"]
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


@functools.partial(jax.jit, static_argnames=("options",))
def train_linear_probe(params: dict[str, jax.Array], features: jax.Array, labels: jax.Array,
                       orders: jax.Array, *, options: ProbeOptions) -> dict[str, jax.Array]:
  """The trained {kernel (D, C), bias (C,)} from `params` (module docstring).

  Args:
    params: the initial classifier (`init_classifier`).
    features: (N, D) float frozen features; labels: (N,) int in [0, C).
    orders: (epochs, S x batch) example indices of every epoch, -1 = padding
      (`epoch_orders`).
    options: epochs and batch size must match `orders`.
  """
  epochs, length = orders.shape
  if epochs != options.epochs or length % options.batch_size:
    raise ValueError(f"train_linear_probe: orders {orders.shape} must be (epochs="
                     f"{options.epochs}, a multiple of batch_size={options.batch_size})")
  steps = length // options.batch_size
  rates = jnp.repeat(jnp.asarray(_epoch_rates(options), jnp.float32), steps)
  # PyTorch's SGD: the decay joins the gradient before the momentum trace.
  optimizer = optax.chain(optax.add_decayed_weights(options.weight_decay),
                          optax.trace(decay=options.momentum),
                          optax.scale_by_schedule(lambda count: -rates[count]))
  batches = orders.reshape(epochs * steps, options.batch_size)

  def step(carry, index):
    params, state = carry
    valid = index >= 0
    safe = jnp.maximum(index, 0)
    grads = jax.grad(_batch_loss)(params, features[safe], labels[safe], valid)
    updates, state = optimizer.update(grads, state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), batches)
  return params


def predict(params: dict[str, jax.Array], features: jax.Array) -> jax.Array:
  """(N,) argmax class of the linear classifier (ties: the lower class)."""
  return jnp.argmax(features @ params["kernel"] + params["bias"], axis=-1)


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, *,
                          num_classes: int, options: ProbeOptions = ProbeOptions(),
                          seed: int = 0) -> float:
  """Top-1 accuracy on the test features of a probe trained on the train features."""
  train_features = jnp.asarray(train_features, jnp.float32)
  train_labels = jnp.asarray(train_labels, jnp.int32).ravel()
  if train_features.ndim != 2 or train_labels.shape[0] != train_features.shape[0]:
    raise ValueError(f"linear_probe: train features {train_features.shape} must be (N, D) "
                     f"with one label each; got {train_labels.shape[0]} labels")
  if not len(train_labels):
    raise ValueError("linear_probe: no train features")
  low, high = int(train_labels.min()), int(train_labels.max())
  if low < 0 or high >= num_classes:
    raise ValueError(f"linear_probe: train labels must lie in [0, {num_classes}); got "
                     f"[{low}, {high}]")
  init_key, order_key = jax.random.split(jax.random.key(seed))
  params = init_classifier(init_key, train_features.shape[1], num_classes)
  orders = epoch_orders(order_key, len(train_labels), options)
  params = train_linear_probe(params, train_features, train_labels, orders, options=options)
  predicted = np.asarray(predict(params, jnp.asarray(test_features, jnp.float32)))
  truth = np.asarray(test_labels).ravel()
  if truth.shape != predicted.shape:
    raise ValueError(f"linear_probe: {predicted.shape[0]} test features but {truth.shape[0]} "
                     f"labels")
  return float(np.mean(predicted == truth)) if truth.size else float("nan")
