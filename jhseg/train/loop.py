"""`train_and_evaluate(config, workdir)`: the one training loop of jhseg.

The loop knows nothing about any method: the task named by `config.task`
(see `jhseg.tasks.TASKS`) supplies model, transforms, loss and evaluation.
The engine supplies devices and sharding (a `data` mesh axis over all
devices; batches sharded, state replicated), the jitted train step with
buffer donation, optimisation (`jhseg.train.optim`), orbax checkpoints with
automatic resumption, and logging (`metrics.jsonl`, TensorBoard, console).

Host synchronisation happens only every `log_every_steps` (and at evaluation
and checkpoint steps), where the per-step losses are fetched together; a
non-finite loss then stops the run with `NonFiniteLossError` naming the step.
Checkpoints are written only after the steps before them were checked, so
the last checkpoint of a failed run is always a good one.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from jhseg import data as data_lib
from jhseg.tasks import get_task
from jhseg.train import checkpointing, devices, optim, run_config, workdir_lock
from jhseg.train.config_fields import check_fields
from jhseg.train.logging import MetricWriter


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def _make_train_step(graphdef: nnx.GraphDef, task, seed: int) -> Callable:
  base_key = jax.random.key(seed)

  def train_step(state, batch, step, lr_scale):
    model, optimizer = nnx.merge(graphdef, state)
    model.train()
    rng = jax.random.fold_in(base_key, step)

    def loss_fn(model):
      return task.loss(model, batch, rng)

    (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads, lr_scale=lr_scale)
    # Checked with the loss at the next host sync: a checkpoint never holds NaN parameters.
    params_finite = jnp.all(jnp.asarray(
        [jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(nnx.state(model, nnx.Param))]))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "params_finite": params_finite, **aux}
    return nnx.state((model, optimizer)), metrics

  return train_step


class _PendingMetrics:
  """Per-step metrics kept on device until the next host synchronisation."""

  def __init__(self):
    self._steps: list[tuple[int, dict[str, jax.Array]]] = []

  def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
    self._steps.append((step, metrics))

  def flush(self) -> dict[str, float]:
    """Means over the pending steps; raises on the first non-finite loss."""
    if not self._steps:
      return {}
    steps = [s for s, _ in self._steps]
    values = jax.device_get([m for _, m in self._steps])
    self._steps = []
    for step, m in zip(steps, values):
      if not np.isfinite(m["loss"]):
        raise NonFiniteLossError(f"training loss is {float(m['loss'])} at step {step}")
      if not m["params_finite"]:
        raise NonFiniteLossError(f"the update of step {step} made parameters non-finite "
                                 f"(loss {float(m['loss'])})")
    return {f"train/{k}": float(np.mean([m[k] for m in values]))
            for k in values[0] if k != "params_finite"}


def _evaluate(task, graphdef, state, config, workdir: str, step: int, sharding, *,
              split: str, prefix: str = "eval") -> dict[str, float]:
  model, _ = nnx.merge(graphdef, state)
  model.eval()
  source = data_lib.load_source(config.data, split)
  local = devices.per_process_batch_size(config.data.get("eval_batch_size") or config.data.batch_size)
  batches = data_lib.eval_batches(
      source, task.eval_transforms(), local_batch_size=local,
      process_index=jax.process_index(), process_count=jax.process_count(),
      max_examples=config.data.get("num_eval_examples"))
  results = task.evaluate(model, (devices.to_global_batch(b, sharding) for b in batches),
                          workdir if prefix == "eval" else os.path.join(workdir, prefix), step)
  return {f"{prefix}/{k}": v for k, v in results.items()}


def _make_plateau(config: ml_collections.ConfigDict) -> optim.PlateauController | None:
  if not config.get("plateau"):
    return None
  if "metric" not in config.plateau:
    raise ValueError("config.plateau.metric is required (e.g. 'eval/loss')")
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
    params, missing = checkpointing.load_params_from(config.init_from, state[0])
    state[0] = params  # The run state is (model, optimizer).
    logging.info("initialised from %s (%d parameters not found there: %s)", config.init_from,
                 len(missing), missing[:10])
  return state, 0


def _due(step: int, every: int | None, last: int) -> bool:
  return step == last or bool(every) and step % every == 0


@workdir_lock.one_run_per_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains `config.task` for `config.num_train_steps`, resuming from `workdir`.

  Returns the metrics of the last logging step and the last evaluation.
  """
  check_fields(config)
  devices.maybe_initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  task = get_task(config.task)(config)
  mesh = devices.make_data_mesh()
  batch_sharding, replicated = devices.data_sharding(mesh), devices.replicated(mesh)
  run_config.prepare(config, workdir)  # Refuses a resume with another model, writes nothing.

  total = int(config.num_train_steps)
  train_source = data_lib.load_source(config.data, config.data.train_split)
  train_iter = iter(data_lib.train_dataset(
      train_source, task.train_transforms(), seed=config.seed,
      local_batch_size=devices.per_process_batch_size(config.data.batch_size),
      process_index=jax.process_index(), process_count=jax.process_count(),
      num_threads=config.data.get("num_threads", 2)))

  model = task.make_model(nnx.Rngs(config.seed))
  optimizer = nnx.Optimizer(model, optim.make_optimizer(config.optim, total), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  del model, optimizer
  state = devices.replicate(state, mesh)
  state_sharding = jax.tree.map(lambda _: replicated, state)

  plateau = _make_plateau(config)
  checkpointer = checkpointing.Checkpointer(workdir, config.get("checkpoint", {}))
  state, start = _resume_or_initialise(config, checkpointer, state, train_iter, plateau)

  train_step = jax.jit(_make_train_step(graphdef, task, config.seed), donate_argnums=0,
                       out_shardings=(state_sharding, replicated))
  writer = MetricWriter(workdir, total_steps=total, resume_step=start)
  pending = _PendingMetrics()
  summary: dict[str, float] = {}
  eval_every = config.get("eval_every_steps")
  ckpt_every = config.get("checkpoint_every_steps")
  try:
    for step in range(start + 1, total + 1):
      batch = devices.to_global_batch(next(train_iter), batch_sharding)
      lr_scale = np.float32(plateau.scale if plateau else 1.0)
      state, metrics = train_step(state, batch, np.int32(step), lr_scale)
      pending.add(step, metrics)
      evaluate_now, save_now = _due(step, eval_every, total), _due(step, ckpt_every, total)
      if _due(step, config.get("log_every_steps", 50), total) or evaluate_now or save_now:
        train_metrics = pending.flush()
        summary.update(writer.write(step, {**train_metrics, "train/lr_scale": lr_scale}))
        writer.progress(step, train_metrics)
        checkpointer.check()  # An asynchronous save that failed stops the run here.
      eval_metrics = None
      if evaluate_now:
        eval_metrics = _evaluate(task, graphdef, state, config, workdir, step, batch_sharding,
                                 split=config.data.eval_split)
        summary.update(writer.write(step, eval_metrics))
        logging.info("evaluation at step %d: %s", step, eval_metrics)
        if plateau:
          if config.plateau.metric not in eval_metrics:
            raise KeyError(f"config.plateau.metric={config.plateau.metric!r} is not among the "
                           f"evaluation metrics {sorted(eval_metrics)}")
          plateau.update(eval_metrics[config.plateau.metric])
      if save_now:
        meta = {"step": step, "data_iterator": train_iter.get_state(),
                "plateau": plateau.state_dict() if plateau else None}
        checkpointer.save(step, state, meta, metrics=eval_metrics)
    if config.data.get("test_split"):
      # The final model on the held-out split, once (outputs under workdir/test/).
      test_metrics = _evaluate(task, graphdef, state, config, workdir, total, batch_sharding,
                               split=config.data.test_split, prefix="test")
      summary.update(writer.write(total, test_metrics))
      logging.info("test split %r at step %d: %s", config.data.test_split, total, test_metrics)
  except NonFiniteLossError as err:
    last = checkpointer.latest_step()
    where = (f"The last good checkpoint is step {last} in {checkpointer.directory}"
             if last is not None else "No checkpoint was written yet: there is none to resume")
    raise NonFiniteLossError(f"{err}; stopped. {where}") from None
  finally:
    checkpointer.close()
    writer.close()
  return summary
