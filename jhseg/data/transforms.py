"""Per-example transforms and how randomness reaches them.

A transform is a function of one example (a dict of NumPy arrays). A random
transform also takes a `numpy.random.Generator`; it is marked with
`@random_transform`. The pipeline seeds that generator from the run seed and
the example's *global* position in the data stream, so augmentations do not
depend on how many processes or devices read the data, nor on resumption.

Transforms run in the input pipeline's worker threads: keep them NumPy-only.
Calling JAX there dispatches device work from several threads, which can
deadlock with the collectives of a multi-device training step.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Example = dict[str, np.ndarray]


def random_transform(fn: Callable[[Example, np.random.Generator], Example]):
  """Marks `fn(example, rng)` as a random transform."""
  fn.random_transform = True
  return fn


def is_random(fn) -> bool:
  return getattr(fn, "random_transform", False)


def apply_transforms(example: Example, transforms, *, seed: int, position: int) -> Example:
  rng = None
  for fn in transforms:
    if is_random(fn):
      rng = rng or np.random.default_rng((seed, position))
      example = fn(example, rng)
    else:
      example = fn(example)
  return example


def segmentation_stack(example: Example, fields, *, who: str, config_field: str,
                       hint: str = "") -> np.ndarray:
  """(K, H, W) int32 ground truths: every field of `example`, (H, W) or (K, H, W), stacked.

  A missing field is a ValueError naming `who` (the task), the field, the config field
  that lists it and the example's fields.
  """
  maps = []
  for field in fields:
    if field not in example:
      raise ValueError(f"{who}: dataset example has no field {field!r} ({config_field}; has "
                       f"{sorted(example)}); expected an (H, W) or (K, H, W) int segmentation"
                       + (f" ({hint})" if hint else ""))
    value = np.asarray(example[field]).astype(np.int32)
    maps.extend(value if value.ndim == 3 else [value])
  return np.stack(maps)
