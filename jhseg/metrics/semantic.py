"""Semantic segmentation scores from a confusion matrix, flat and hierarchical.

The sufficient statistic of every score here is the confusion matrix
`C[i, j]` = number of pixels of true class `i` predicted as class `j`. It is a
sum over pixels, so it is computed per image or per batch (under `jax.jit`,
with fixed shapes, on device) and summed on the host:

  IoU_c = C[c, c] / (sum_j C[c, j] + sum_i C[i, c] - C[c, c])
  mIoU  = mean of IoU_c over classes with a non-empty union
  pixel accuracy = trace(C) / sum(C)

Classes whose union is empty over the whole evaluation (never labelled, never
predicted) are left out of the mean rather than counted as 0 or 1: they carry
no evidence either way (the convention of the PASCAL VOC / Cityscapes tools).

Hierarchical mIoU (HiPoSeg): for a label tree whose level-0 classes are the
leaves and whose level-l classes group level-(l-1) classes, the level-l
confusion matrix of leaf predictions is `M_l^T C M_l` with `M_l` the 0/1
leaf -> level-l membership matrix, so one leaf matrix serves every level. A
model that predicts every level separately adds one matrix per level instead.

`scores_over_batches` is the whole flat evaluation of a task: a model's class
maps over the padded global batches of an `EvalContext`, one jitted confusion
matrix a batch, summed on the host.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def confusion_matrix(labels: jax.Array, predictions: jax.Array, *,
                     num_classes: int, ignore_index: int | None = None,
                     mask: jax.Array | None = None) -> jax.Array:
  """Confusion matrix `C[true, predicted]` of two label maps; jit-able.

  Args:
    labels: int array of true classes, any shape (e.g. (B, H, W)).
    predictions: int array of predicted classes, same shape as `labels`.
    num_classes: number of classes K; the output is (K, K).
    ignore_index: label value whose pixels are not counted (e.g. 255).
    mask: optional boolean array, same shape; False pixels are not counted
      (use it for the padding of fixed-shape batches).

  Returns:
    int32 (K, K) counts. Pixels whose label or prediction lies outside
    [0, K) are not counted (under `jit` nothing can be raised);
    `ConfusionMatrix.add` checks predictions on the host and fails instead.
  """
  labels = jnp.asarray(labels)
  predictions = jnp.asarray(predictions)
  if labels.shape != predictions.shape:
    raise ValueError(f"confusion_matrix: labels shape {labels.shape} != "
                     f"predictions shape {predictions.shape}")
  valid = ((labels >= 0) & (labels < num_classes)
           & (predictions >= 0) & (predictions < num_classes))
  if ignore_index is not None:
    valid &= labels != ignore_index
  if mask is not None:
    valid &= jnp.asarray(mask, bool)
  flat = jnp.where(valid, labels * num_classes + predictions, 0).ravel()
  counts = jnp.zeros(num_classes * num_classes, jnp.int32)
  counts = counts.at[flat].add(valid.ravel().astype(jnp.int32),
                               **_replicated_scatter_output(flat))
  return counts.reshape(num_classes, num_classes)


def _replicated_scatter_output(indices: jax.Array) -> dict:
  """`out_sharding` for a scatter whose indices are explicitly sharded.

  With explicit-axis meshes (`jax.set_mesh`) JAX asks where the scattered
  counts live; they are a small replicated table. Auto-sharded and
  unsharded inputs need nothing.
  """
  sharding = getattr(jax.typeof(indices), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if spec is not None and any(axis is not None for axis in spec):
    return {"out_sharding": jax.sharding.PartitionSpec()}
  return {}


@functools.partial(jax.jit, static_argnames=("num_classes", "ignore_index"))
def _jitted_confusion_matrix(labels, predictions, *, num_classes, ignore_index):
  return confusion_matrix(labels, predictions, num_classes=num_classes,
                          ignore_index=ignore_index)


def scores_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
  """IoU per class, mIoU, pixel accuracy and mean class accuracy of `C`."""
  matrix = np.asarray(matrix, np.float64)
  true_positives = np.diag(matrix)
  per_true = matrix.sum(axis=1)
  per_predicted = matrix.sum(axis=0)
  union = per_true + per_predicted - true_positives
  with np.errstate(invalid="ignore", divide="ignore"):
    iou = np.where(union > 0, true_positives / union, np.nan)
    class_accuracy = np.where(per_true > 0, true_positives / per_true, np.nan)
  total = matrix.sum()
  present = union > 0
  return {
      "iou": iou,
      "miou": float(np.mean(iou[present])) if present.any() else float("nan"),
      "pixel_accuracy": float(true_positives.sum() / total) if total else float("nan"),
      "mean_accuracy": (float(np.nanmean(class_accuracy))
                        if (per_true > 0).any() else float("nan")),
  }


class ConfusionMatrix:
  """Accumulates a confusion matrix over images; `result()` gives the scores.

  `add` takes NumPy or JAX label maps (computed with the jitted
  `confusion_matrix`), `add_matrix` a matrix already computed on device, and
  `merge` combines accumulators filled in worker processes.
  """

  def __init__(self, num_classes: int, *, ignore_index: int | None = 255):
    if num_classes < 1:
      raise ValueError(f"ConfusionMatrix: num_classes must be >= 1, got {num_classes}")
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.matrix = np.zeros((num_classes, num_classes), np.int64)

  def add(self, labels, predictions) -> None:
    """Adds one image (or a batch) of true and predicted label maps.

    JAX arrays are counted on their device by the jitted `confusion_matrix`;
    NumPy arrays on the host with `np.bincount` (no compilation per image
    size, which matters for datasets of differently sized images).
    """
    if isinstance(labels, jax.Array) or isinstance(predictions, jax.Array):
      self._check_predictions(np.asarray(jnp.min(predictions)),
                              np.asarray(jnp.max(predictions)))
      self.add_matrix(_jitted_confusion_matrix(
          jnp.asarray(labels), jnp.asarray(predictions),
          num_classes=self.num_classes, ignore_index=self.ignore_index))
      return
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.shape != predictions.shape:
      raise ValueError(f"ConfusionMatrix.add: labels shape {labels.shape} != "
                       f"predictions shape {predictions.shape}")
    if predictions.size:
      self._check_predictions(predictions.min(), predictions.max())
    valid = (labels >= 0) & (labels < self.num_classes)
    if self.ignore_index is not None:
      valid &= labels != self.ignore_index
    flat = labels[valid].astype(np.int64) * self.num_classes + predictions[valid]
    self.matrix += np.bincount(flat, minlength=self.num_classes ** 2).reshape(
        self.num_classes, self.num_classes)

  def _check_predictions(self, low, high) -> None:
    if low < 0 or high >= self.num_classes:
      raise ValueError(
          f"ConfusionMatrix.add: predictions must lie in [0, {self.num_classes}), "
          f"got values in [{low}, {high}]")

  def add_matrix(self, matrix) -> None:
    """Adds a (K, K) confusion matrix, e.g. summed over a batch on device."""
    matrix = np.asarray(matrix)
    if matrix.shape != self.matrix.shape:
      raise ValueError(f"ConfusionMatrix.add_matrix: expected shape "
                       f"{self.matrix.shape}, got {matrix.shape}")
    self.matrix += matrix.astype(np.int64)

  def merge(self, other: "ConfusionMatrix") -> None:
    self.add_matrix(other.matrix)

  def result(self) -> dict[str, np.ndarray | float]:
    return scores_from_confusion(self.matrix)


Batch = Mapping[str, jax.Array]


@functools.partial(nnx.jit, static_argnames=("predict", "num_classes"))
def _padded_batch_confusion(model, batch: Batch, *, predict, num_classes: int) -> jax.Array:
  predictions = predict(model, batch)
  mask = jnp.broadcast_to(batch["example_mask"][:, None, None], predictions.shape)
  return confusion_matrix(batch["labels"], predictions, num_classes=num_classes, mask=mask)


def scores_over_batches(predict: Callable[[Any, Batch], jax.Array], model,
                        batches: Iterable[Batch], *, num_classes: int) -> dict[str, float]:
  """Pixel accuracy and mIoU of a model's class maps over padded batches.

  Args:
    predict: `predict(model, batch)` -> int (B, H, W) predicted classes; traced
      under `nnx.jit` and a static argument, so pass a module-level function
      (not a fresh lambda) to compile once for every evaluation of a run.
    model: the flax.nnx model handed to `predict`.
    batches: fixed-shape batches with "labels" (B, H, W) int and "example_mask"
      (B,) bool, e.g. `EvalContext.batches()`.
    num_classes: K. Pixels of padding examples and labels outside [0, K)
      (e.g. -1 for void) are not counted.

  Returns:
    {"pixel_accuracy", "miou"} as Python floats (`scores_from_confusion`).
  """
  scores = ConfusionMatrix(num_classes, ignore_index=None)
  for batch in batches:
    scores.add_matrix(jax.device_get(_padded_batch_confusion(
        model, batch, predict=predict, num_classes=num_classes)))
  result = scores.result()
  return {"pixel_accuracy": float(result["pixel_accuracy"]), "miou": float(result["miou"])}


@dataclasses.dataclass(frozen=True)
class LabelTree:
  """A label hierarchy as, per level, the class of every leaf class.

  `leaf_to_level[l][c]` is the level-l class of leaf class c; level 0 is the
  leaves themselves, so `leaf_to_level[0]` is `arange(num_leaves)`.
  """
  leaf_to_level: tuple[np.ndarray, ...]

  def __post_init__(self):
    if not self.leaf_to_level:
      raise ValueError("LabelTree: needs at least the leaf level")
    num_leaves = len(self.leaf_to_level[0])
    for level, mapping in enumerate(self.leaf_to_level):
      if mapping.ndim != 1 or len(mapping) != num_leaves or (mapping < 0).any():
        raise ValueError(f"LabelTree: level {level} must map each of the "
                         f"{num_leaves} leaves to a class id >= 0")
    if not np.array_equal(self.leaf_to_level[0], np.arange(num_leaves)):
      raise ValueError("LabelTree: level 0 must be the leaves (0..num_leaves-1)")

  @classmethod
  def from_parents(cls, parents: Sequence[Sequence[int]]) -> "LabelTree":
    """From `parents[l][c]`, the level-(l+1) parent of level-l class c."""
    num_leaves = len(parents[0]) if parents else 0
    levels = [np.arange(num_leaves)]
    for level, parent in enumerate(parents):
      parent = np.asarray(parent, np.int64)
      if len(parent) <= levels[-1].max(initial=-1):
        raise ValueError(f"LabelTree.from_parents: parents[{level}] has "
                         f"{len(parent)} entries, but level {level} has class "
                         f"{levels[-1].max()}")
      levels.append(parent[levels[-1]])
    return cls(tuple(levels))

  @property
  def num_levels(self) -> int:
    return len(self.leaf_to_level)

  def num_classes(self, level: int) -> int:
    return int(self.leaf_to_level[level].max()) + 1

  def project(self, leaf_matrix: np.ndarray, level: int) -> np.ndarray:
    """Level-`level` confusion matrix `M^T C M` of a leaf confusion matrix."""
    mapping = self.leaf_to_level[level]
    k = self.num_classes(level)
    rows = np.zeros((k, leaf_matrix.shape[1]), np.int64)
    np.add.at(rows, mapping, leaf_matrix)
    out = np.zeros((k, k), np.int64)
    np.add.at(out.T, mapping, rows.T)
    return out


class HierarchicalMIoU:
  """mIoU and pixel accuracy at every level of a `LabelTree` (HiPoSeg).

  `add(labels, predictions)` takes leaf-level maps and scores every level
  through the tree; `add_levels(labels_per_level, predictions_per_level)`
  scores models that predict each level separately (not necessarily
  consistent with the tree). Both may be mixed in one evaluation.
  """

  def __init__(self, tree: LabelTree, *, ignore_index: int | None = 255):
    self.tree = tree
    self.ignore_index = ignore_index
    self.levels = [ConfusionMatrix(tree.num_classes(l), ignore_index=ignore_index)
                   for l in range(tree.num_levels)]

  def add(self, labels, predictions) -> None:
    leaf = ConfusionMatrix(self.tree.num_classes(0), ignore_index=self.ignore_index)
    leaf.add(labels, predictions)
    for level, accumulator in enumerate(self.levels):
      accumulator.add_matrix(self.tree.project(leaf.matrix, level))

  def add_levels(self, labels_per_level: Sequence, predictions_per_level: Sequence) -> None:
    if not len(labels_per_level) == len(predictions_per_level) == len(self.levels):
      raise ValueError(
          f"HierarchicalMIoU.add_levels: expected {len(self.levels)} levels of labels "
          f"and predictions, got {len(labels_per_level)} and {len(predictions_per_level)}")
    for accumulator, labels, predictions in zip(self.levels, labels_per_level,
                                                predictions_per_level):
      accumulator.add(labels, predictions)

  def merge(self, other: "HierarchicalMIoU") -> None:
    for mine, theirs in zip(self.levels, other.levels):
      mine.merge(theirs)

  def result(self) -> dict[str, list]:
    per_level = [accumulator.result() for accumulator in self.levels]
    return {key: [scores[key] for scores in per_level]
            for key in ("miou", "pixel_accuracy", "mean_accuracy", "iou")}
