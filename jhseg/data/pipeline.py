"""grain pipelines: seeded shuffle, repeat, per-process share, transforms, batch.

Training: the *global* stream of example indices (shuffled per epoch with the
run seed, repeated forever) is cut into global batches; process p reads only
rows [p*L, (p+1)*L) of every global batch (L = local batch size). So a run on
one process with 4 devices and a run on 2 processes with 2 devices each see
the same global batches, and each process reads only its own share.

With `repeats` > 1 each drawn index fills `repeats` consecutive positions (repeated
augmentation, `jhseg.data.repeated_augmentation`); transforms are keyed by position, so
the copies are augmented independently.

Iterator state (`get_state`/`set_state`) is tiny and identical on every
process because all processes advance in lockstep; checkpoints store it.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Iterator, Sequence

import grain
import numpy as np

from jhseg.data.repeated_augmentation import RepeatEachIndex
from jhseg.data.transforms import apply_transforms

Example = dict[str, np.ndarray]


class _ProcessShareOfBatches(grain.MapDataset):
  """Local element k = global element (k // L) * G + p * L + k % L."""

  def __init__(self, parent: grain.MapDataset, *, process_index: int, process_count: int,
               local_batch_size: int):
    super().__init__(parent)
    self._p, self._n, self._l = process_index, process_count, local_batch_size

  def __len__(self) -> int:
    return len(self._parent) // self._n

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    g = (index // self._l) * self._l * self._n + self._p * self._l + index % self._l
    return self._parent[g]

  def __str__(self) -> str:
    return f"ProcessShareOfBatches(p={self._p}, n={self._n}, l={self._l})"


def _stack(examples: Sequence[Example]) -> Example:
  keys = examples[0].keys()
  for i, e in enumerate(examples):
    if e.keys() != keys:
      raise ValueError(f"example {i} of a batch has fields {sorted(e)}; expected {sorted(keys)}")
  try:
    return {k: np.stack([e[k] for e in examples]) for k in keys}
  except ValueError as err:
    shapes = {k: sorted({np.shape(e[k]) for e in examples}) for k in keys}
    raise ValueError(f"examples do not batch: the task's transforms must give fixed shapes; "
                     f"shapes per field: {shapes}") from err


def train_dataset(source: Sequence[Any], transforms: Sequence[Callable], *, seed: int,
                  local_batch_size: int, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, repeats: int = 1) -> grain.IterDataset:
  """Infinite iterable of local batches (dicts of NumPy arrays); `repeats` copies of each
  drawn example in a row (module docstring)."""
  if len(source) < local_batch_size * process_count:
    raise ValueError(f"the training split has {len(source)} examples, fewer than one global "
                     f"batch ({local_batch_size * process_count})")
  n = len(source)
  positions = grain.MapDataset.range(sys.maxsize // 2)  # global stream positions
  order = grain.MapDataset.range(n).shuffle(seed=seed).repeat()  # position -> example index
  if repeats != 1:
    order = RepeatEachIndex(order, repeats=repeats)
  stream = _ProcessShareOfBatches(positions, process_index=process_index,
                                  process_count=process_count, local_batch_size=local_batch_size)
  ds = stream.map(lambda pos: apply_transforms(source[order[pos]], transforms, seed=seed,
                                               position=pos))
  ds = ds.batch(local_batch_size, drop_remainder=True, batch_fn=_stack)
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4))


def eval_batches(source: Sequence[Any], transforms: Sequence[Callable], *, local_batch_size: int,
                 process_index: int = 0, process_count: int = 1,
                 max_examples: int | None = None) -> Iterator[Example]:
  """One pass over the split in order, padded to whole global batches.

  Every example gets `example_mask` (True for real examples); padding rows
  repeat the first example with the mask False, so shapes stay fixed.
  """
  n = len(source) if max_examples is None else min(len(source), max_examples)
  global_batch = local_batch_size * process_count
  num_batches = -(-n // global_batch)
  for b in range(num_batches):
    rows = []
    for r in range(local_batch_size):
      index = b * global_batch + process_index * local_batch_size + r
      example = apply_transforms(source[min(index, n - 1) if index < n else 0], transforms,
                                 seed=0, position=index)
      example["example_mask"] = np.asarray(index < n)
      rows.append(example)
    yield _stack(rows)
