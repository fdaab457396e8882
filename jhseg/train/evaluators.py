"""Named evaluators (`config.evals`) and the `EvalContext` the engine hands a task.

In the spirit of big_vision's `config.evals`, each entry `config.evals.<name>` is
one evaluator with the fields of `EVALUATOR_FIELDS`:

  method        the task's evaluation to run (a key of `Task.evaluations()`;
                "default" = `Task.evaluate`)
  dataset       TFDS name[/config] (default: config.data.name)
  data_dir      TFDS data_dir (default: config.data.data_dir)
  split         the split it reads
  num_examples  at most this many examples (None: the whole split)
  batch_size    global batch size (default: config.data.batch_size)
  every_steps   evaluates at every multiple of it and at the last step
                (None: at the last step only)
  options       free settings read by the task's evaluation (`ctx.options`)

Metrics are logged as `eval/<name>/<metric>`, outputs go to
`workdir/eval/<name>/<step>/`. At start-up every evaluator runs its transforms
on the first example of its split (`check_first_example`), so a dataset that
lacks a field fails in seconds, naming the evaluator, dataset and field.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

import jax
import ml_collections

from jhseg import data as data_lib
from jhseg.data.transforms import apply_transforms
from jhseg.tasks.base import Batch, Evaluation, Task, Transform, get_evaluation
from jhseg.train import devices
from jhseg.train import logging as train_logging

EVALUATOR_FIELDS = ("method", "dataset", "data_dir", "split", "num_examples", "batch_size",
                    "every_steps", "options")
# Fields of the single evaluation that `config.evals` replaced, and where they went.
LEGACY_FIELDS = {
    "eval_every_steps": "config.evals.<name>.every_steps",
    "data.eval_split": "config.evals.<name>.split",
    "data.test_split": "an evaluator with every_steps=None (the last step only)",
    "data.eval_batch_size": "config.evals.<name>.batch_size",
    "data.num_eval_examples": "config.evals.<name>.num_examples",
}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One entry of `config.evals` with its defaults filled in."""
  name: str
  method: str
  dataset: str
  data_dir: str | None
  split: str
  num_examples: int | None
  batch_size: int
  every_steps: int | None
  options: ml_collections.ConfigDict
  auto_build: bool = True

  def due(self, step: int, total_steps: int) -> bool:
    return step == total_steps or bool(self.every_steps) and step % self.every_steps == 0

  def data_config(self, dataset: str | None = None,
                  data_dir: str | None = None) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "name": dataset or self.dataset,
        "data_dir": data_dir if data_dir is not None else self.data_dir,
        "auto_build": self.auto_build})


def _legacy_fields(config: ml_collections.ConfigDict) -> list[str]:
  found = []
  for field in LEGACY_FIELDS:
    node, *rest = field.split(".")
    value = config.get(node) if not rest else (config.get(node) or {}).get(rest[0])
    if value is not None:
      found.append(field)
  return found


def parse_evaluators(config: ml_collections.ConfigDict) -> list[Evaluator]:
  """The evaluators of `config.evals`; bad fields raise ValueError naming them."""
  legacy = _legacy_fields(config)
  if legacy:
    raise ValueError("config fields " + ", ".join(f"config.{f}" for f in legacy) +
                     " are replaced by named evaluators: " +
                     "; ".join(f"config.{f} -> {LEGACY_FIELDS[f]}" for f in legacy) +
                     " (see experiments/configs/_engine.py)")
  evaluators = []
  for name, spec in (config.get("evals") or {}).items():
    where = f"config.evals.{name}"
    if not hasattr(spec, "keys"):
      raise ValueError(f"{where}: expected a mapping of {EVALUATOR_FIELDS}; got {spec!r}")
    unknown = sorted(set(spec.keys()) - set(EVALUATOR_FIELDS))
    if unknown:
      raise ValueError(f"unknown field(s) {where}.{unknown}; valid fields: "
                       f"{sorted(EVALUATOR_FIELDS)}")
    if not spec.get("split"):
      raise ValueError(f"{where}.split is required (the split the evaluator reads)")
    every = spec.get("every_steps")
    if every is not None and (not isinstance(every, int) or every < 1):
      raise ValueError(f"{where}.every_steps={every!r}: expected a positive integer or None "
                       f"(the last step only)")
    options = spec.get("options")
    evaluators.append(Evaluator(
        name=name, method=spec.get("method") or "default",
        dataset=spec.get("dataset") or config.data.name,
        data_dir=spec.get("data_dir") or config.data.get("data_dir"),
        split=spec["split"], num_examples=spec.get("num_examples"),
        batch_size=int(spec.get("batch_size") or config.data.batch_size),
        every_steps=every,
        options=options if options is not None else ml_collections.ConfigDict(),
        auto_build=config.data.get("auto_build", True)))
  return evaluators


def check_metric_name(metric: str, evaluators: Sequence[Evaluator], *, where: str) -> None:
  """`metric` must read `eval/<evaluator>/<name>` for one of `evaluators`."""
  names = [e.name for e in evaluators]
  parts = metric.split("/")
  if len(parts) < 3 or parts[0] != "eval" or parts[1] not in names:
    raise ValueError(f"{where}={metric!r}: expected 'eval/<evaluator>/<metric>' with an "
                     f"evaluator of config.evals {names}")


def check_first_example(evaluator: Evaluator, transforms: Sequence[Transform]) -> None:
  """Runs `transforms` on the first example of the evaluator's split (fail early)."""
  where = (f"evaluator {evaluator.name!r} (config.evals.{evaluator.name}): dataset "
           f"{evaluator.dataset!r} split {evaluator.split!r}")
  try:
    source = data_lib.load_source(evaluator.data_config(), evaluator.split)
  except (FileNotFoundError, ValueError) as err:
    raise type(err)(f"{where}: {err}") from err
  if len(source) == 0:
    raise ValueError(f"{where}: the split is empty")
  example = source[0]
  try:
    apply_transforms(example, transforms, seed=0, position=0)
  except Exception as err:  # any failure: re-raised with the evaluator and dataset named
    raise ValueError(f"{where}: the evaluation's transforms fail on the first example: "
                     f"{type(err).__name__}: {err} (the dataset's fields: "
                     f"{sorted(example)})") from err


_EVALUATORS_OWN = object()  # default of `EvalContext.batches(num_examples=...)`


class EvalContext:
  """What an evaluation gets from the engine (one per evaluator and step).

  Attributes:
    name: the evaluator's name.
    step, total_steps: the training step evaluated and config.num_train_steps.
    out_dir: `workdir/eval/<name>/<step>`, not created (process 0 writes there).
    mesh, batch_sharding: the data mesh and the sharding of batches over it.
    options: the evaluator's `options` (a ConfigDict, maybe empty).
    evaluator: the whole `Evaluator`.
  """

  def __init__(self, evaluator: Evaluator, transforms: Sequence[Transform], *, step: int,
               total_steps: int, workdir: str, mesh: jax.sharding.Mesh):
    self.evaluator = evaluator
    self.name = evaluator.name
    self.step = step
    self.total_steps = total_steps
    self.out_dir = os.path.join(workdir, "eval", evaluator.name, str(step))
    self.mesh = mesh
    self.batch_sharding = devices.data_sharding(mesh)
    self.options = evaluator.options
    self._transforms = transforms

  @property
  def is_last_step(self) -> bool:
    return self.step >= self.total_steps

  def batches(self, split: str | None = None, *, dataset: str | None = None,
              data_dir: str | None = None, num_examples: Any = _EVALUATORS_OWN,
              transforms: Sequence[Transform] | None = None,
              batch_size: int | None = None) -> Iterator[Batch]:
    """Global batches (sharded over the mesh, with `example_mask`) of one pass.

    Without arguments: the evaluator's own split. `split`, `dataset` and
    `data_dir` select another (default: the evaluator's dataset); `num_examples`
    defaults to the evaluator's for its own split and to the whole split
    otherwise; `transforms` to the evaluation's.
    """
    own = split is None and dataset is None and data_dir is None
    if num_examples is _EVALUATORS_OWN:
      num_examples = self.evaluator.num_examples if own else None
    source = data_lib.load_source(self.evaluator.data_config(dataset, data_dir),
                                  split or self.evaluator.split)
    local = devices.per_process_batch_size(batch_size or self.evaluator.batch_size)
    batches = data_lib.eval_batches(
        source, self._transforms if transforms is None else transforms,
        local_batch_size=local, process_index=jax.process_index(),
        process_count=jax.process_count(), max_examples=num_examples)
    total = len(source) if num_examples is None else min(len(source), num_examples)
    progress = train_logging.PassProgress(
        f"eval/{self.name} step {self.step}: {dataset or self.evaluator.dataset} "
        f"{split or self.evaluator.split}", total)
    for batch in batches:
      yield devices.to_global_batch(batch, self.batch_sharding)
      # Counted when the consumer asks for the next batch: the time includes its work.
      progress.advance(min(local * jax.process_count(), total - progress.done))


def evaluation_of(task: Task, evaluator: Evaluator) -> Evaluation:
  return get_evaluation(task, evaluator.method, where=f"config.evals.{evaluator.name}.method")


def run_evaluator(task: Task, model, evaluator: Evaluator, *, step: int, total_steps: int,
                  workdir: str, mesh) -> dict[str, float]:
  """Runs one evaluator; returns its scalars as `eval/<name>/<metric>`."""
  evaluation = evaluation_of(task, evaluator)
  ctx = EvalContext(evaluator, evaluation.transforms(), step=step, total_steps=total_steps,
                    workdir=workdir, mesh=mesh)
  results = evaluation.run(model, ctx)
  return {f"eval/{evaluator.name}/{k}": v for k, v in results.items()}
