"""Batched NumPy helper: apply a one-image hierarchy function over leading dims."""
from __future__ import annotations

from typing import Callable

import numpy as np


def apply_per_image(fn: Callable, h, v, **options):
  """fn(h[i], v[i], **options) for every leading index i of h (..., H, W-1), v (..., H-1, W).

  Example: `apply_per_image(ucm_from_dissimilarity, h, v, min_region_area=30)`.

  Returns:
    The per-image results stacked over the leading dims: an array, or a tuple of
    arrays when `fn` returns a tuple (as the (h, v) functions do).
  """
  h, v = np.asarray(h), np.asarray(v)
  if h.ndim < 2 or v.ndim < 2 or h.shape[:-2] != v.shape[:-2]:
    raise ValueError(f"apply_per_image: arguments `h`, `v` must be (..., H, W-1) and (..., H-1, W) "
                     f"with the same leading dims; got {h.shape} and {v.shape}.")
  batch = h.shape[:-2]
  results = None
  is_tuple = False
  for index in np.ndindex(batch):
    value = fn(h[index], v[index], **options)
    is_tuple = isinstance(value, tuple)
    parts = value if is_tuple else (value,)
    if results is None:
      results = tuple(np.empty(batch + np.shape(p), np.asarray(p).dtype) for p in parts)
    for result, part in zip(results, parts):
      result[index] = part
  if results is None:  # empty batch: nothing to infer dtypes from
    raise ValueError(f"apply_per_image: empty batch {batch}.")
  return results if is_tuple else results[0]
