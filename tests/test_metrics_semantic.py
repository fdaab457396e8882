"""Tests for jhseg.metrics.semantic: confusion matrix, mIoU, hierarchical mIoU."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.metrics import semantic


def _reference_confusion(labels, predictions, k, ignore=None):
  """Independent reference: a Python loop over pixels."""
  out = np.zeros((k, k), np.int64)
  for t, p in zip(np.ravel(labels), np.ravel(predictions)):
    if ignore is not None and t == ignore:
      continue
    out[t, p] += 1
  return out


def test_confusion_matrix_hand_computed():
  labels = np.array([[0, 0, 1], [1, 2, 2]])
  predictions = np.array([[0, 1, 1], [1, 2, 0]])
  expected = np.array([[1, 1, 0],
                       [0, 2, 0],
                       [1, 0, 1]])
  np.testing.assert_array_equal(
      semantic.confusion_matrix(labels, predictions, num_classes=3), expected)
  scores = semantic.scores_from_confusion(expected)
  # IoU: class0 1/(2+2-1)=1/3, class1 2/(2+3-2)=2/3, class2 1/(2+1-1)=1/2.
  np.testing.assert_allclose(scores["iou"], [1 / 3, 2 / 3, 1 / 2])
  assert scores["miou"] == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
  assert scores["pixel_accuracy"] == pytest.approx(4 / 6)
  assert scores["mean_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_perfect_prediction_scores_one():
  labels = np.random.default_rng(0).integers(0, 5, size=(7, 9))
  acc = semantic.ConfusionMatrix(5)
  acc.add(labels, labels)
  result = acc.result()
  assert result["miou"] == 1.0 and result["pixel_accuracy"] == 1.0


def test_ignore_index_and_absent_classes():
  labels = np.array([[0, 255], [0, 1]])
  predictions = np.array([[0, 3], [0, 1]])
  acc = semantic.ConfusionMatrix(4, ignore_index=255)
  acc.add(labels, predictions)
  result = acc.result()
  # The ignored pixel (predicted 3) is not counted; classes 2 and 3 have an
  # empty union and are left out of the mean.
  assert np.isnan(result["iou"][2]) and np.isnan(result["iou"][3])
  assert result["miou"] == 1.0


def test_jit_batched_with_padding_mask_matches_reference():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 4, size=(4, 6, 5))
  predictions = rng.integers(0, 4, size=(4, 6, 5))
  mask = np.ones_like(labels, bool)
  mask[:, 4:, :] = False  # padding rows

  @jax.jit
  def step(l, p, m):
    return semantic.confusion_matrix(l, p, num_classes=4, mask=m)

  got = step(jnp.asarray(labels), jnp.asarray(predictions), jnp.asarray(mask))
  expected = _reference_confusion(labels[:, :4], predictions[:, :4], 4)
  np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("axis_type", ["Auto", "Explicit"])
def test_sharded_batch_sum_equals_per_image_accumulation(axis_type):
  """Confusion matrix of a batch sharded over 4 devices = sum of per-image ones."""
  mesh = jax.make_mesh((4,), ("data",),
                       axis_types=(getattr(jax.sharding.AxisType, axis_type),))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, size=(8, 5, 5))
  predictions = rng.integers(0, 3, size=(8, 5, 5))
  with jax.set_mesh(mesh):
    batch_matrix = jax.jit(lambda l, p: semantic.confusion_matrix(l, p, num_classes=3))(
        jax.device_put(labels, sharding), jax.device_put(predictions, sharding))
  per_image = semantic.ConfusionMatrix(3)
  for l, p in zip(labels, predictions):
    per_image.add(l, p)
  from_batch = semantic.ConfusionMatrix(3)
  from_batch.add_matrix(batch_matrix)
  np.testing.assert_array_equal(from_batch.matrix, per_image.matrix)
  np.testing.assert_array_equal(per_image.matrix,
                                _reference_confusion(labels, predictions, 3))


def test_merge_of_workers_equals_single_accumulator():
  rng = np.random.default_rng(3)
  pairs = [(rng.integers(0, 3, (4, 4)), rng.integers(0, 3, (4, 4))) for _ in range(4)]
  whole, first, second = (semantic.ConfusionMatrix(3) for _ in range(3))
  for i, (l, p) in enumerate(pairs):
    whole.add(l, p)
    (first if i < 2 else second).add(l, p)
  first.merge(second)
  np.testing.assert_array_equal(first.matrix, whole.matrix)


def test_failure_modes():
  with pytest.raises(ValueError, match="predictions must lie in"):
    semantic.ConfusionMatrix(3).add(np.zeros((2, 2), int), np.full((2, 2), 3))
  with pytest.raises(ValueError, match="shape"):
    semantic.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), num_classes=2)
  with pytest.raises(ValueError, match="num_classes"):
    semantic.ConfusionMatrix(0)
  with pytest.raises(ValueError, match="level 0 must be the leaves"):
    semantic.LabelTree((np.array([1, 0]),))


def test_label_tree_projection_equals_scoring_mapped_labels():
  # Leaves 0..4 -> parents {0: [0, 1], 1: [2, 3], 2: [4]} -> root {0: all}.
  tree = semantic.LabelTree.from_parents([[0, 0, 1, 1, 2], [0, 0, 0]])
  assert tree.num_levels == 3
  np.testing.assert_array_equal(tree.leaf_to_level[1], [0, 0, 1, 1, 2])
  rng = np.random.default_rng(4)
  labels = rng.integers(0, 5, size=(6, 7))
  predictions = rng.integers(0, 5, size=(6, 7))
  hier = semantic.HierarchicalMIoU(tree)
  hier.add(labels, predictions)
  result = hier.result()
  for level in range(3):
    mapping = tree.leaf_to_level[level]
    direct = semantic.ConfusionMatrix(tree.num_classes(level))
    direct.add(mapping[labels], mapping[predictions])
    assert result["miou"][level] == pytest.approx(direct.result()["miou"])
    assert result["pixel_accuracy"][level] == pytest.approx(
        direct.result()["pixel_accuracy"])
  # The root level has one class: always right.
  assert result["miou"][2] == 1.0
  # Coarser levels can only be at least as accurate at the pixel level.
  assert result["pixel_accuracy"][0] <= result["pixel_accuracy"][1] <= 1.0


def test_hierarchical_per_level_predictions():
  tree = semantic.LabelTree.from_parents([[0, 0, 1]])
  labels0 = np.array([[0, 1], [2, 2]])
  labels1 = tree.leaf_to_level[1][labels0]
  hier = semantic.HierarchicalMIoU(tree)
  # Leaf prediction wrong on one pixel (0 vs 1), level-1 prediction perfect.
  hier.add_levels([labels0, labels1], [np.array([[1, 1], [2, 2]]), labels1])
  result = hier.result()
  assert result["miou"][1] == 1.0
  # Leaf level: class0 IoU 0, class1 IoU 1/2, class2 IoU 1.
  assert result["miou"][0] == pytest.approx((0 + 0.5 + 1) / 3)
  with pytest.raises(ValueError, match="expected 2 levels"):
    hier.add_levels([labels0], [labels0])


def test_host_and_device_paths_agree():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 4, size=(5, 6))
  labels[0, 0] = 255
  predictions = rng.integers(0, 4, size=(5, 6))
  host, device = semantic.ConfusionMatrix(4), semantic.ConfusionMatrix(4)
  host.add(labels, predictions)
  device.add(jnp.asarray(labels), jnp.asarray(predictions))
  np.testing.assert_array_equal(host.matrix, device.matrix)
  np.testing.assert_array_equal(host.matrix, _reference_confusion(labels, predictions, 4,
                                                                  ignore=255))
  with pytest.raises(ValueError, match="predictions must lie in"):
    device.add(jnp.zeros((2, 2), jnp.int32), jnp.full((2, 2), -1))


class _Shift(nnx.Module):
  """Predicts (image + shift) mod 3: a model whose only parameter moves its classes."""

  def __init__(self, shift: int):
    self.shift = nnx.Param(jnp.asarray(shift, jnp.int32))

  def __call__(self, image):
    return (image + self.shift[...]) % 3


_TRACES = []


def _predict_shifted(model, batch):
  _TRACES.append(1)  # runs once per compilation only
  return model(batch["image"])


def test_scores_over_batches_skips_padding_examples_and_void_labels():
  """Two padded batches of two 2x2 images, 3 classes, hand-counted confusion."""
  batches = [
      {"labels": np.array([[[0, 1], [2, -1]], [[1, 1], [1, 1]]], np.int32),
       "image": np.array([[[0, 2], [2, 0]], [[0, 0], [0, 0]]], np.int32),
       "example_mask": np.array([True, False])},  # the second image is padding
      {"labels": np.array([[[1, 1], [0, 0]], [[2, 2], [2, 2]]], np.int32),
       "image": np.array([[[1, 1], [1, 0]], [[2, 2], [2, 2]]], np.int32),
       "example_mask": np.array([True, True])}]
  # Counted (true, predicted): (0,0) (1,2) (2,2) | (1,1) (1,1) (0,1) (0,0) | (2,2) x4, so
  # C = [[2, 1, 0], [0, 2, 1], [0, 0, 5]]: IoU 2/3, 2/4, 5/6; pixel accuracy 9/11.
  _TRACES.clear()
  model = _Shift(0)
  scores = semantic.scores_over_batches(_predict_shifted, model,
                                        [jax.tree.map(jnp.asarray, b) for b in batches],
                                        num_classes=3)
  assert scores == {"pixel_accuracy": pytest.approx(9 / 11),
                    "miou": pytest.approx((2 / 3 + 1 / 2 + 5 / 6) / 3)}
  assert all(type(v) is float for v in scores.values())
  # A changed parameter is read, not baked in at compilation, and one compilation
  # serves both calls. Shifted by one, a pixel is right iff image = true - 1 (mod 3):
  # no counted pixel is (only the padding image's would be, true 1 / image 0).
  model.shift[...] = jnp.asarray(1, jnp.int32)
  shifted = semantic.scores_over_batches(_predict_shifted, model,
                                         [jax.tree.map(jnp.asarray, b) for b in batches],
                                         num_classes=3)
  assert shifted["pixel_accuracy"] == 0.0
  assert len(_TRACES) == 1
