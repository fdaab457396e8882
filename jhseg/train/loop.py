"""`train_and_evaluate(config, workdir)`: the one training loop of jhseg.

The loop knows nothing about any method: the task named by `config.task`
(see `jhseg.tasks.TASKS` and the contract in `jhseg.tasks.base`) supplies model,
transforms, trainable set, loss, post-update hook and evaluations. The engine
supplies devices and sharding (a `data` mesh axis over all devices; batches
sharded, state replicated), the jitted train step with buffer donation and a
`StepContext` (rng, step, total steps), optimisation (`jhseg.train.optim`) of
the trainable variables only, the named evaluators of `config.evals`
(`jhseg.train.evaluators`), orbax checkpoints with automatic resumption, and
logging (`metrics.jsonl`, TensorBoard, console).

Host synchronisation happens only every `log_every_steps` (and at evaluation
and checkpoint steps), where the per-step losses are fetched together; a
non-finite loss, or a non-finite value in any floating-point variable of the
model after an update, then stops the run with `NonFiniteLossError` naming the
step (and the variables). Checkpoints are written only after the steps before
them were checked, so the last checkpoint of a failed run is always a good one.

Evaluation steps: a step where an evaluator is due is always checkpointed, and
the checkpoint is written *before* the evaluations run, so a crashing or killed
evaluation never loses the step's training. The evaluation metrics are then
attached to that checkpoint (for `checkpoint.best_metric`) and fed to the
plateau controller. A run resumed from such a step runs its evaluations again
(the plateau state saved with the step is the one before them), so a resumed
run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from jhseg import data as data_lib
from jhseg.tasks import get_task
from jhseg.tasks.base import StepContext, Task, has_after_update
from jhseg.train import checkpointing, devices, evaluators as evaluators_lib, optim
from jhseg.train import run_config, workdir_lock
from jhseg.train.config_fields import check_fields
from jhseg.train.logging import MetricWriter


class NonFiniteLossError(FloatingPointError):
  """The training loss, or a variable of the model, became NaN or infinite."""


def trainable_filter(task: Task, optim_config: ml_collections.ConfigDict) -> Any:
  """The task's `trainable()` filter minus the parameters matching `optim.frozen`."""
  frozen = [re.compile(p) for p in optim_config.get("frozen", ())]
  wanted = task.trainable()
  if not frozen:
    return wanted

  def not_frozen(path, value):
    del value
    name = optim.parameter_name(path)
    return not any(p.fullmatch(name) or p.fullmatch(name + "/value") for p in frozen)

  return nnx.All(wanted, not_frozen)


def build_state(task: Task, config: ml_collections.ConfigDict,
                total_steps: int) -> tuple[nnx.GraphDef, nnx.State, Any]:
  """(graphdef, state, trainable filter) of the run's (model, optimizer), on the host."""
  model = task.make_model(nnx.Rngs(config.seed))
  wrt = trainable_filter(task, config.optim)
  if not jax.tree.leaves(nnx.state(model, wrt)):
    raise ValueError(f"task {config.task!r}: nothing to train (Task.trainable() and "
                     f"config.optim.frozen leave no variable of the model)")
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config.optim, total_steps), wrt=wrt)
  graphdef, state = nnx.split((model, optimizer))
  return graphdef, state, wrt


def _float_leaves(tree: Any) -> list[tuple[str, jax.Array]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return [(optim.parameter_name(path), x) for path, x in leaves
          if jnp.issubdtype(x.dtype, jnp.inexact)]


def rekey_model_rngs(model: nnx.Module, rng: jax.Array) -> None:
  """Sets the key of every `nnx.Rngs` stream of `model` to fold_in(rng, i): the
  model's own randomness (e.g. dropout) follows the engine's step key."""
  keys = nnx.state(model, nnx.RngKey)
  leaves, treedef = jax.tree.flatten(keys)
  if leaves:
    nnx.update(model, jax.tree.unflatten(
        treedef, [jax.random.fold_in(rng, i) for i in range(len(leaves))]))


def make_train_step(graphdef: nnx.GraphDef, task: Task, *, wrt: Any, seed: int,
                    total_steps: int) -> Callable:
  """`train_step(state, batch, step, lr_scale) -> (state, metrics)`, to be jitted.

  Gradients of `task.loss` with respect to the `wrt` variables only; then the
  optimizer update; then `task.after_update` if the task has one and the
  optimizer really updated (under gradient accumulation, every k-th call).
  `metrics["variables_finite"]` holds one flag per floating-point variable of
  the model, named by `train_step.variable_names` once traced.
  """
  base_key = jax.random.key(seed)
  hook = has_after_update(task)

  def train_step(state, batch, step, lr_scale):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    ctx = StepContext(rng=jax.random.fold_in(base_key, step), step=step,
                      total_steps=total_steps)
    rekey_model_rngs(model, jax.random.fold_in(ctx.rng, 1 << 30))  # one RNG convention

    def loss_fn(model):
      return task.loss(model, batch, ctx)

    (loss, aux), grads = nnx.value_and_grad(
        loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)(model)
    accumulating = isinstance(optimizer.opt_state, optax.MultiStepsState)
    if accumulating:
      updates_before = optimizer.opt_state.gradient_step[...]
    optimizer.update(model, grads, lr_scale=lr_scale)
    if hook:
      if accumulating:  # MultiSteps counts the updates it applied
        applied = optimizer.opt_state.gradient_step[...] != updates_before
        nnx.cond(applied, lambda m: task.after_update(m, ctx), lambda m: None, model)
      else:
        task.after_update(model, ctx)
    # Checked with the loss at the next host sync: a checkpoint never holds NaN state.
    checked = _float_leaves(nnx.state(model))
    train_step.variable_names = [name for name, _ in checked]
    finite = jnp.stack([jnp.all(jnp.isfinite(x)) for _, x in checked])
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "variables_finite": finite, **aux}
    return nnx.state((model, optimizer)), metrics

  train_step.variable_names = []
  return train_step


class _PendingMetrics:
  """Per-step metrics kept on device until the next host synchronisation."""

  def __init__(self, variable_names: Callable[[], list[str]]):
    self._steps: list[tuple[int, dict[str, jax.Array]]] = []
    self._variable_names = variable_names

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._steps.append((step, metrics))

  def flush(self) -> dict[str, float]:
    """Means over the pending steps; raises on the first non-finite loss or variable."""
    if not self._steps:
      return {}
    steps = [s for s, _ in self._steps]
    values = jax.device_get([m for _, m in self._steps])
    self._steps = []
    for step, m in zip(steps, values):
      if not np.isfinite(m["loss"]):
        raise NonFiniteLossError(f"training loss is {float(m['loss'])} at step {step}")
      bad = np.flatnonzero(~np.asarray(m["variables_finite"]))
      if bad.size:
        names = [self._variable_names()[i] for i in bad[:5]]
        raise NonFiniteLossError(
            f"the update of step {step} made {bad.size} model variable(s) non-finite "
            f"(e.g. {names}; loss {float(m['loss'])})")
    return {f"train/{k}": float(np.mean([m[k] for m in values]))
            for k in values[0] if k != "variables_finite"}


def _make_plateau(config: ml_collections.ConfigDict,
                  evaluators: list) -> optim.PlateauController | None:
  if not config.get("plateau"):
    return None
  if "metric" not in config.plateau:
    raise ValueError("config.plateau.metric is required (e.g. 'eval/val/loss')")
  evaluators_lib.check_metric_name(config.plateau.metric, evaluators,
                                   where="config.plateau.metric")
  return optim.PlateauController(**{k: v for k, v in config.plateau.items() if k != "metric"})


def _resume_or_initialise(config, checkpointer, state, train_iter, plateau):
  """Restores the run's latest checkpoint, or `config.init_from`'s parameters.

  Returns the state and the last finished step (0 for a new run).
  """
  if checkpointer.latest_step() is not None:
    state, meta = checkpointer.restore(state)
    train_iter.set_state(meta["data_iterator"])
    if plateau and meta.get("plateau"):
      plateau.load_state_dict(meta["plateau"])
    logging.info("resumed from step %d in %s", meta["step"], checkpointer.directory)
    return state, int(meta["step"])
  if config.get("init_from"):
    directory, prefixes = checkpointing.init_from_parts(config.init_from)
    params, missing, unused = checkpointing.load_params_from(
        directory, state[0], prefixes=prefixes, with_unused=True)
    state[0] = params  # The run state is (model, optimizer).
    logging.info("initialised from %s: %d model variables not found there %s; %d of its "
                 "variables unused %s", directory, len(missing), missing[:10], len(unused),
                 unused[:10])
  return state, 0


def _due(step: int, every: int | None, last: int) -> bool:
  return step == last or bool(every) and step % every == 0


@workdir_lock.one_run_per_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.task` for `config.num_train_steps`, resuming from `workdir`.

  Returns the metrics of the last logging step and of the last run of each evaluator.
  """
  check_fields(config)
  evaluators = evaluators_lib.parse_evaluators(config)
  devices.maybe_initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  task = get_task(config.task)(config)
  best_metric = config.get("checkpoint", {}).get("best_metric")
  if best_metric:
    evaluators_lib.check_metric_name(best_metric, evaluators,
                                     where="config.checkpoint.best_metric")
  for evaluator in evaluators:  # fail in seconds, not at the first evaluation
    evaluators_lib.check_first_example(
        evaluator, evaluators_lib.evaluation_of(task, evaluator).transforms())
  mesh = devices.make_data_mesh()
  batch_sharding, replicated = devices.data_sharding(mesh), devices.replicated(mesh)
  run_config.prepare(config, workdir)  # Refuses a resume with another model, writes nothing.

  total = int(config.num_train_steps)
  train_source = data_lib.load_source(config.data, config.data.train_split)
  train_iter = iter(data_lib.train_dataset(
      train_source, task.train_transforms(), seed=config.seed,
      local_batch_size=devices.per_process_batch_size(config.data.batch_size),
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.data.get("num_threads", 2),
      repeats=data_lib.repeats_of(config.data)))

  graphdef, state, wrt = build_state(task, config, total)
  state = devices.replicate(state, mesh)
  state_sharding = jax.tree.map(lambda _: replicated, state)

  plateau = _make_plateau(config, evaluators)
  checkpointer = checkpointing.Checkpointer(workdir, config.get("checkpoint", {}))
  state, start = _resume_or_initialise(config, checkpointer, state, train_iter, plateau)

  step_fn = make_train_step(graphdef, task, wrt=wrt, seed=config.seed, total_steps=total)
  train_step = jax.jit(step_fn, donate_argnums=0, out_shardings=(state_sharding, replicated))
  # A resumed run drops the records after its checkpoint (and that step's evaluations,
  # which `evaluate(start)` below writes again), so each step appears once.
  writer = MetricWriter(workdir, total_steps=total, resume_step=start)
  pending = _PendingMetrics(lambda: step_fn.variable_names)
  summary: dict[str, float] = {}
  ckpt_every = config.get("checkpoint_every_steps")

  def evaluate(step: int) -> None:
    due = [e for e in evaluators if e.due(step, total)]
    if not due:
      return
    model, _ = nnx.merge(graphdef, state)
    model.eval()
    metrics: dict[str, float] = {}
    for evaluator in due:
      metrics.update(evaluators_lib.run_evaluator(task, model, evaluator, step=step,
                                                  total_steps=total, workdir=workdir,
                                                  mesh=mesh))
    metrics = writer.write(step, metrics)
    summary.update(metrics)
    logging.info("evaluation at step %d: %s", step, metrics)
    if best_metric and best_metric in metrics:
      checkpointer.attach_metrics(step, metrics)
    if plateau and config.plateau.metric in metrics:
      plateau.update(metrics[config.plateau.metric])

  try:
    if start:
      evaluate(start)  # evaluations of the restored step: they may not have finished
    for step in range(start + 1, total + 1):
      batch = devices.to_global_batch(next(train_iter), batch_sharding)
      lr_scale = np.float32(plateau.scale if plateau else 1.0)
      state, metrics = train_step(state, batch, np.int32(step), lr_scale)
      pending.add(step, metrics)
      evaluate_now = any(e.due(step, total) for e in evaluators)
      save_now = evaluate_now or _due(step, ckpt_every, total)
      if _due(step, config.get("log_every_steps", 50), total) or save_now:
        train_metrics = pending.flush()
        summary.update(writer.write(step, {**train_metrics, "train/lr_scale": lr_scale}))
        writer.progress(step, train_metrics)
        checkpointer.check()  # An asynchronous save that failed stops the run here.
      if save_now:  # before evaluating: a failed evaluation keeps the step
        meta = {"step": step, "data_iterator": train_iter.get_state(),
                "plateau": plateau.state_dict() if plateau else None}
        checkpointer.save(step, state, meta)
      if evaluate_now:
        evaluate(step)
  except NonFiniteLossError as err:
    last = checkpointer.latest_step()
    where = (f"The last good checkpoint is step {last} in {checkpointer.directory}"
             if last is not None else "No checkpoint was written yet: there is none to resume")
    raise NonFiniteLossError(f"{err}; stopped. {where}") from None
  finally:
    checkpointer.close()
    writer.close()
  return summary
