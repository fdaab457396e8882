"""The contract between the training engine and a method.

A method plugs into `jhseg.train.train_and_evaluate` by providing a `Task`:
how to build its model, how to turn dataset examples into fixed-shape batches,
its loss (pure, traced under `jax.jit`), and its evaluation (host-level, may
call jitted functions and Higra host callbacks). The engine owns everything
else: devices, sharding, optimisation, checkpoints, logging.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from flax import nnx

Batch = Mapping[str, jax.Array]
Example = dict[str, np.ndarray]


class Task(abc.ABC):
  """One method's pieces. Subclasses are listed in `jhseg.tasks.TASKS`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the flax.nnx model (parameters initialised from `rngs`)."""

  @abc.abstractmethod
  def train_transforms(self) -> Sequence[Callable[[Example], Example]]:
    """Per-example functions applied after decoding, in order, for training.

    Each takes and returns a dict of NumPy arrays; the last one must yield
    arrays of a fixed shape so examples batch (padding plus a mask if needed).
    Random transforms take `(example, rng: np.random.Generator)` and are
    marked by the `random_transform` attribute (see `jhseg.data`).
    """

  def eval_transforms(self) -> Sequence[Callable[[Example], Example]]:
    """Per-example functions for evaluation; by default the training ones."""
    return self.train_transforms()

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: Batch,
           rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar training loss and auxiliary scalar metrics for one batch.

    Called inside the jitted train step with the model in training mode.
    """

  @abc.abstractmethod
  def evaluate(self, model: nnx.Module, batches: Iterable[Batch],
               workdir: str, step: int) -> dict[str, Any]:
    """Evaluates on the evaluation split; returns scalar metrics.

    May write pictures or files under `workdir` (e.g. `workdir/eval/<step>/`).
    """

  def infer(self, model: nnx.Module, image: np.ndarray, out_dir: str,
            name: str) -> dict[str, str]:
    """Predicts one image and writes the results as `out_dir/<name>_*` files.

    Optional; used by `python -m jhseg.infer`. `model` is in evaluation mode,
    `image` a float32 (H, W, 3) array in [0, 1] of any size. Returns
    {kind: path} of the files written.
    """
    del model, image, out_dir, name
    from jhseg.tasks import TASKS  # pylint: disable=g-import-not-at-top  (cycle)
    mine = [n for n, cls in TASKS.items() if cls is type(self)] or [type(self).__name__]
    able = sorted(n for n, cls in TASKS.items() if cls.infer is not Task.infer)
    raise NotImplementedError(f"task {mine[0]!r} has no inference on single images "
                              f"(Task.infer); tasks that have one: {able}")
