"""Host-side (NumPy) operations on superpixel label maps: numbering, padding, GT labels."""
from __future__ import annotations

import numpy as np

IGNORE = -1  # superpixel label of impure superpixels, and of padding ids


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
  """Non-negative labels -> int32 0..n-1, numbered by each region's first pixel (raster order)."""
  labels = np.asarray(labels)
  if labels.size == 0 or labels.min() < 0:
    raise ValueError(f"relabel_consecutive: expected a non-empty map of labels >= 0; got shape "
                     f"{labels.shape}" + (f", min {labels.min()}" if labels.size else ""))
  flat = labels.ravel()
  _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
  rank = np.empty(first.size, np.int32)
  rank[np.argsort(first, kind="stable")] = np.arange(first.size, dtype=np.int32)
  return rank[inverse].reshape(labels.shape)


def pad_superpixels(labels: np.ndarray, max_superpixels: int, *,
                    what: str = "superpixels") -> np.ndarray:
  """(max_superpixels,) bool mask of the ids 0..n-1 used by `labels` (0..n-1, n <= max).

  The label map itself keeps its shape; the mask makes the id range fixed for batching.
  """
  labels = np.asarray(labels)
  count = int(labels.max()) + 1 if labels.size else 0
  if count > max_superpixels:
    raise ValueError(f"{what}: an image has {count} superpixels, more than the fixed maximum "
                     f"{max_superpixels} (config.superpixels.max_superpixels); raise it")
  return np.arange(max_superpixels) < count


def superpixel_segment_labels(superpixels: np.ndarray, segments: np.ndarray, *,
                              num_superpixels: int, purity: float = 0.7) -> np.ndarray:
  """Ground-truth segment of each superpixel by majority, IGNORE when impure.

  As the authors' SuperpixelPooling layer (DEL code): superpixel i takes the segment
  label covering most of its pixels if that share is strictly above `purity` (0.7),
  else IGNORE (its pairs are left out of the loss).

  Args:
    superpixels: (H, W) int ids in [0, num_superpixels) (pixels < 0 are ignored, e.g.
      padding).
    segments: (H, W) int ground-truth segment ids >= 0 (pixels < 0 are ignored).
    num_superpixels: length of the result (the padded maximum).

  Returns:
    (num_superpixels,) int32 segment label per superpixel; IGNORE for impure, empty ones.
  """
  superpixels, segments = np.asarray(superpixels), np.asarray(segments)
  if superpixels.shape != segments.shape:
    raise ValueError(f"superpixel_segment_labels: superpixels {superpixels.shape} and segments "
                     f"{segments.shape} must have the same shape")
  keep = (superpixels >= 0) & (segments >= 0)
  sp, seg = superpixels[keep].astype(np.int64), segments[keep].astype(np.int64)
  _, seg = np.unique(seg, return_inverse=True)  # dense ids: the count table stays small
  num_segments = int(seg.max()) + 1 if seg.size else 1
  table = np.bincount(sp * num_segments + seg, minlength=num_superpixels * num_segments)
  table = table.reshape(num_superpixels, num_segments)
  totals = table.sum(axis=1)
  best = table.argmax(axis=1)  # first maximum on ties, as the authors' strict `<` scan
  share = table[np.arange(num_superpixels), best] / np.maximum(totals, 1)
  original = np.unique(segments[keep].astype(np.int64))
  out = np.where((totals > 0) & (share > purity), original[best] if original.size else 0, IGNORE)
  return out.astype(np.int32)
