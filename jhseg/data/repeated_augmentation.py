"""Repeated augmentation (Hoffer et al. 2020; DeiT's `RASampler`): each drawn image appears
`repeats` times in a row in the training stream, each time with its own augmentation.

`jhseg.data.pipeline.train_dataset` maps every global stream position q to an example
index through an `order` dataset: a per-epoch reshuffled permutation of the split, repeated
forever. With `repeats = r`, position q reads `order[q // r]` instead (`RepeatEachIndex`):

  positions [r*m, r*m + r) all hold the m-th drawn index,
  positions [r*n*p, r*n*(p + 1)) ("pass" p of a split of n examples) hold every example
  exactly r times (the p-th permutation, each entry repeated r times).

The random transforms are keyed by the stream position (`apply_transforms(..., position=q)`),
so the r copies get independent augmentations, and everything stays a function of (seed,
position): resumption and the per-process share of each global batch work unchanged.

Config: `config.data.repeated_augmentation` (an int, default 1 = off; DeiT's 3).

Faithfulness (to DeiT's `samplers.RASampler`, which the authors' `main_suppix.py` enables
by default):
  * DeiT keeps its epoch at (about) n samples, i.e. the first n / r images of a fresh
    permutation each epoch, each r times, so an epoch skips two thirds of the images and
    the permutations of successive epochs are independent. Here one permutation is walked
    over r epochs' worth of positions, so the same number of samples per epoch holds n / r
    images r times each and every image is seen exactly r times per r epochs. Runs count
    steps, not epochs, so the number of samples is the config's either way.
  * DeiT spreads the r copies over r GPUs (rank-strided), so that a GPU's BatchNorm and
    loss see distinct images. Here the copies are neighbours in one global batch; the
    engine's loss and BatchNorm statistics are global-batch means under `jax.jit`, so the
    device that holds a copy changes nothing. As in DeiT, copies sit in the same step.
    One difference remains: mixup / cutmix pair row i with row B-1-i of the global batch,
    so the two middle rows may be copies of one image (DeiT mixes within a GPU's batch,
    which holds no two copies); at most one pair per batch.
"""
from __future__ import annotations

from typing import Any, Mapping

import grain


class RepeatEachIndex(grain.MapDataset):
  """Element q = parent[q // repeats]: each element of `parent` `repeats` times in a row."""

  def __init__(self, parent: grain.MapDataset, *, repeats: int):
    super().__init__(parent)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
      raise ValueError(f"RepeatEachIndex: repeats={repeats!r}; expected an int >= 1")
    self._repeats = repeats

  def __len__(self) -> int:
    return len(self._parent) * self._repeats

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[index // self._repeats]

  def __str__(self) -> str:
    return f"RepeatEachIndex(repeats={self._repeats})"


def repeats_of(data_config: Mapping[str, Any]) -> int:
  """`config.data.repeated_augmentation` (absent or None: 1, no repetition), checked."""
  value = data_config.get("repeated_augmentation")
  if value is None:
    return 1
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"config.data.repeated_augmentation={value!r}: expected an int >= 1 "
                     f"(copies of each drawn image in the training stream; 1 = off, "
                     f"DeiT's 3)")
  return value
