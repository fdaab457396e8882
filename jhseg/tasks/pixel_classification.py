"""A small fully convolutional per-pixel classifier: the engine's reference task.

It classifies every pixel of the synthetic scenes into object classes. It is
the smallest task that exercises the whole engine (data, sharding, optimiser,
checkpoints, evaluation) and a sanity baseline for the hierarchical methods.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jhseg.metrics import semantic
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext


class TinyFCN(nnx.Module):
  """conv3x3-BN-ReLU blocks and a 1x1 classifier, at full resolution."""

  def __init__(self, *, num_classes: int, width: int, depth: int, rngs: nnx.Rngs):
    channels = [3] + [width] * depth
    # No bias before BatchNorm: it would have a zero gradient that Adam turns into noise.
    self.convs = nnx.List([nnx.Conv(a, b, (3, 3), use_bias=False, rngs=rngs)
                          for a, b in zip(channels, channels[1:])])
    self.norms = nnx.List([nnx.BatchNorm(width, rngs=rngs) for _ in range(depth)])
    self.classifier = nnx.Conv(width, num_classes, (1, 1), rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for conv, norm in zip(self.convs, self.norms):
      x = nnx.relu(norm(conv(x)))
    return self.classifier(x)


def _to_inputs(example: dict[str, np.ndarray], label_field: str) -> dict[str, np.ndarray]:
  return {"image": example["image"].astype(np.float32) / 255.0,
          "labels": example[label_field].astype(np.int32)}


class PixelClassification(Task):
  """Per-pixel softmax cross-entropy on `config.model.label_field`."""

  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    return TinyFCN(num_classes=m.num_classes, width=m.width, depth=m.depth, rngs=rngs)

  def train_transforms(self):
    field = self.config.model.label_field
    return [lambda e: _to_inputs(e, field)]

  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    logits = model(batch["image"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["labels"])
    return loss, {"accuracy": accuracy}

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    """Pixel accuracy and mIoU; writes them to `ctx.out_dir`/summary.json."""
    scalars = semantic.scores_over_batches(_predict_classes, model, ctx.batches(),
                                           num_classes=self.config.model.num_classes)
    outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars})
    return scalars


def _predict_classes(model: TinyFCN, batch: Batch) -> jax.Array:
  return jnp.argmax(model(batch["image"]), -1)
