"""The contract between the training engine and a method.

A method plugs into `jhseg.train.train_and_evaluate` by providing a `Task`. The
engine owns devices, sharding, the data pipelines, optimisation, checkpoints,
logging and when things happen; the task says what they are:

  make_model(rngs) -> nnx.Module
  train_transforms() -> [transform]        per-example NumPy functions (`jhseg.data`)
  eval_transforms() -> [transform]         the default evaluation's transforms
  trainable() -> nnx filter                what the optimiser trains (default nnx.Param)
  loss(model, batch, ctx: StepContext) -> (scalar loss, {name: scalar})   traced, jitted
  after_update(model, ctx: StepContext) -> None       optional, traced, jitted
  evaluations() -> {name: Evaluation(run, transforms)}   host level
  evaluate(model, ctx: EvalContext) -> {name: float}     the evaluation called "default"
  infer(model, image, out_dir, name) -> {kind: path}     optional, `python -m jhseg.infer`

Randomness: `ctx.rng` is the key of a step (the run seed folded with the step
number, the same on every device). Before `loss`, the engine also re-keys every
`nnx.Rngs` stream held by the model (dropout layers) from it, so all randomness of
a step follows from (seed, step) and resumed runs repeat it exactly.

What is trained: `trainable()` is an nnx filter over the model's variables. Only
those get gradients (others are not even differentiated: `nnx.DiffState`),
optimiser state, clipping and the logged `grad_norm`. `config.optim.frozen`
patterns remove more. Every other variable (BatchNorm statistics, momentum
encoders, memories, EMA copies) changes only as the task changes it: inside `loss`
(under `jax.lax.stop_gradient`, once per micro-step) or in `after_update`, which
the engine calls once per optimizer update -- with `optim.grad_accum_steps = k`,
after every k-th micro-step only. The non-finite check after each step covers
every floating-point variable of the model, trained or not.

Evaluations: `config.evals` names evaluators (dataset, split, cadence, ...; see
`jhseg.train.evaluators`), each running one entry of `evaluations()` with an
`EvalContext` that gives its batches (already sharded over the mesh), batches of
any other dataset or split, the mesh, the step and its output folder
`workdir/eval/<evaluator>/<step>/`. The returned scalars are logged as
`eval/<evaluator>/<name>`.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

Batch = Mapping[str, jax.Array]
Example = dict[str, np.ndarray]
Transform = Callable[..., Example]


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a training step knows besides the model and the batch (inside `jax.jit`).

  rng: this step's PRNG key (`fold_in(key(config.seed), step)`).
  step: int32 scalar, the 1-based number of this (micro-)step; traced.
  total_steps: config.num_train_steps (a Python int).
  """
  rng: jax.Array
  step: jax.Array
  total_steps: int

  @property
  def progress(self) -> jax.Array:
    """step / total_steps as float32, in (0, 1] (for schedules such as MoCo's momentum)."""
    return jnp.asarray(self.step, jnp.float32) / self.total_steps


class Evaluation(NamedTuple):
  """One evaluation a task offers: `run(model, ctx) -> {name: float}` and the
  per-example transforms of the batches `ctx.batches()` gives it."""
  run: Callable[[nnx.Module, "EvalContext"], Mapping[str, Any]]
  transforms: Callable[[], Sequence[Transform]]


class Task(abc.ABC):
  """One method's pieces. Subclasses are listed in `jhseg.tasks.TASKS`."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @abc.abstractmethod
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """Builds the flax.nnx model (parameters initialised from `rngs`)."""

  @abc.abstractmethod
  def train_transforms(self) -> Sequence[Transform]:
    """Per-example functions applied after decoding, in order, for training.

    Each takes and returns a dict of NumPy arrays; the last one must yield
    arrays of a fixed shape so examples batch (padding plus a mask if needed).
    Random transforms take `(example, rng: np.random.Generator)` and are
    marked by the `random_transform` attribute (see `jhseg.data`).
    """

  def eval_transforms(self) -> Sequence[Transform]:
    """Per-example functions of the "default" evaluation; by default the training ones."""
    return self.train_transforms()

  def trainable(self) -> Any:
    """The nnx filter of the variables the optimiser trains (module docstring)."""
    return nnx.Param

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: Batch,
           ctx: StepContext) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Scalar training loss and auxiliary scalar metrics for one batch.

    Called inside the jitted train step with the model in training mode;
    differentiated with respect to the `trainable()` variables only.
    """

  def after_update(self, model: nnx.Module, ctx: StepContext) -> None:
    """Updates variables outside the gradient (EMA teacher, prototype memory).

    Optional. Called inside the jitted train step after each optimizer update
    (once per `optim.grad_accum_steps` micro-steps), with the updated model.
    """
    del model, ctx

  def evaluations(self) -> Mapping[str, Evaluation]:
    """The evaluations `config.evals.<name>.method` may name. By default one,
    "default": `evaluate` on batches made by `eval_transforms`."""
    if type(self).evaluate is Task.evaluate:
      return {}
    return {"default": Evaluation(self.evaluate, self.eval_transforms)}

  def evaluate(self, model: nnx.Module, ctx: "EvalContext") -> dict[str, Any]:
    """The "default" evaluation: scalar metrics of `model` on `ctx.batches()`.

    `model` is in evaluation mode. Files go under `ctx.out_dir` (only process 0
    writes). Host level: may call jitted functions and Higra host callbacks.
    """
    raise NotImplementedError(f"{type(self).__name__} has no default evaluation")

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


def has_after_update(task: Task) -> bool:
  return type(task).after_update is not Task.after_update


def get_evaluation(task: Task, method: str, *, where: str) -> Evaluation:
  """`task.evaluations()[method]`, or a ValueError naming `where` and the valid names."""
  table = task.evaluations()
  if method not in table:
    raise ValueError(f"{where}: task {type(task).__name__} has no evaluation {method!r}; "
                     f"valid names: {sorted(table)}")
  return table[method]
