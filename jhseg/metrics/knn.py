"""Weighted k-nearest-neighbour classification of features (host, NumPy).

The protocol of Wu et al. (CVPR 2018, sec. 3.4) used by the self-supervised literature
(e.g. DINO's `eval_knn.py`) to read a frozen representation without training a classifier:

  s_ij = <x_i / |x_i|, y_j / |y_j|>          cosine similarity, test i vs train j
  N_i  = the k train items of largest s_ij  (ties: the lower train index first)
  w_c  = sum_{j in N_i, label_j = c} exp(s_ij / T)
  prediction_i = argmax_c w_c               (ties: the lower class)

Defaults k = 20, T = 0.07 (Wu et al.; DINO).
"""
from __future__ import annotations

import numpy as np

KNN_K = 20
KNN_TEMPERATURE = 0.07


def _unit_rows(x: np.ndarray, what: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"knn: `{what}` must be (N, D) features; got shape {x.shape}")
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features: np.ndarray, train_labels: np.ndarray,
                test_features: np.ndarray, *, num_classes: int, k: int = KNN_K,
                temperature: float = KNN_TEMPERATURE) -> np.ndarray:
  """(M,) int predicted classes of the test features (module docstring).

  Args:
    train_features: (N, D); train_labels: (N,) ints in [0, num_classes).
    test_features: (M, D).
    k: neighbours (clipped to N).
  """
  train = _unit_rows(train_features, "train_features")
  test = _unit_rows(test_features, "test_features")
  labels = np.asarray(train_labels).astype(np.int64).ravel()
  if labels.shape[0] != train.shape[0] or train.shape[1] != test.shape[1]:
    raise ValueError(f"knn: {train.shape[0]} train features of width {train.shape[1]}, "
                     f"{labels.shape[0]} labels, test width {test.shape[1]}: they must agree")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"knn: train labels must lie in [0, {num_classes}); got "
                     f"[{labels.min()}, {labels.max()}]")
  if not len(train):
    raise ValueError("knn: no train features")
  k = min(k, len(train))
  similarity = test @ train.T
  neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
  weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1) / temperature)
  votes = np.zeros((len(test), num_classes))
  np.add.at(votes, (np.arange(len(test))[:, None], labels[neighbours]), weights)
  return np.argmax(votes, axis=1)


def knn_accuracy(train_features, train_labels, test_features, test_labels, *,
                 num_classes: int, k: int = KNN_K,
                 temperature: float = KNN_TEMPERATURE) -> float:
  """Top-1 accuracy of `knn_predict` against `test_labels`."""
  predicted = knn_predict(train_features, train_labels, test_features,
                          num_classes=num_classes, k=k, temperature=temperature)
  truth = np.asarray(test_labels).ravel()
  if truth.shape != predicted.shape:
    raise ValueError(f"knn: {predicted.shape[0]} test features but {truth.shape[0]} labels")
  return float(np.mean(predicted == truth)) if truth.size else float("nan")
