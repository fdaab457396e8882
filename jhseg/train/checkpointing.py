"""Orbax checkpoints of a run: model and optimizer state, step, data position.

A checkpoint holds two items: `state` (the nnx state of model and optimizer,
with PRNG keys stored as raw key data) and `meta` (JSON: step, data iterator
state, plateau controller state). The last `keep` checkpoints are kept, plus
the best one by `best_metric` when set.
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint import checkpoint_managers as policies


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(state: Any) -> Any:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, state)


def _abstract(state: Any) -> Any:
  def to_struct(x):
    x = jax.random.key_data(x) if _is_key(x) else x
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
  return jax.tree.map(to_struct, state)


def _data_to_keys(restored: Any, like: Any) -> Any:
  return jax.tree.map(
      lambda r, l: jax.random.wrap_key_data(r, impl=jax.random.key_impl(l)) if _is_key(l) else r,
      restored, like)


class _StepInfo(NamedTuple):
  """What orbax's preservation policies read of a checkpoint."""
  step: int
  time: Any
  metrics: Any


class Checkpointer:
  """Saves and restores `(state, meta)` under `workdir/checkpoints`."""

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    keep = [policies.LatestN(n=config.get("keep", 3))]
    self.best_metric = config.get("best_metric") or None
    if self.best_metric:
      keep.append(policies.BestN(
          get_metric_fn=lambda metrics: metrics[self.best_metric],
          reverse=config.get("best_mode", "min") == "min", n=1,
          keep_checkpoints_without_metrics=False))
    # best_fn makes orbax store each checkpoint's metrics, which BestN reads; without it
    # every checkpoint has no metrics and BestN keeps none.
    best_fn = (lambda metrics: metrics[self.best_metric]) if self.best_metric else None
    self._policy = policies.AnyPreservationPolicy(keep)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=self._policy,
        best_fn=best_fn, best_mode=config.get("best_mode", "min"),
        enable_async_checkpointing=config.get("async", True))
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    if self.best_metric and metrics is not None and self.best_metric not in metrics:
      raise KeyError(f"config.checkpoint.best_metric={self.best_metric!r} is not among the "
                     f"evaluation metrics {sorted(metrics)}")
    args = ocp.args.Composite(state=ocp.args.StandardSave(_keys_to_data(state)),
                              meta=ocp.args.JsonSave(meta))
    self._manager.save(step, args=args, metrics=metrics, force=True)
    logging.info("saved checkpoint at step %d in %s", step, self.directory)

  def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    step = self._manager.latest_step() if step is None else step
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state_like)), meta=ocp.args.JsonRestore()))
    return _data_to_keys(restored.state, state_like), restored.meta

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def attach_metrics(self, step: int, metrics: dict[str, float]) -> None:
    """Records the evaluation metrics of the already saved `step` for `best_metric`.

    The engine saves a step before evaluating it (a failed evaluation keeps the
    step); the metrics come afterwards. They are stored as orbax stores them at
    save time, then the preservation policy runs again.
    """
    if not self.best_metric:
      return
    if self.best_metric not in metrics:
      raise KeyError(f"config.checkpoint.best_metric={self.best_metric!r} is not among the "
                     f"evaluation metrics {sorted(metrics)}")
    self._manager.wait_until_finished()
    if jax.process_index() == 0:
      folder = os.path.join(self.directory, str(step), "metrics")
      os.makedirs(folder, exist_ok=True)
      with open(os.path.join(folder, "metrics"), "w") as f:
        json.dump({k: float(v) for k, v in metrics.items()}, f)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"attach_metrics_{step}")
    self._manager.reload()
    steps = sorted(self._manager.all_steps())
    infos = [_StepInfo(s, None, self._manager.metrics(s)) for s in steps]
    keep = self._policy.should_preserve(infos, context=policies.PreservationContext())
    for s, kept in zip(steps, keep):
      if not kept:
        self._manager.delete(s)

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def read_state_arrays(path: str) -> dict[str, Any]:
  """A checkpoint's `state` item as NumPy arrays, whatever devices wrote it.

  `path` is a `checkpoints/<step>/state` folder. Used to inspect runs and to
  initialise from runs made on another topology (other devices or hosts).
  """
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", metadata)
  tree = getattr(tree, "tree", tree)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  return checkpointer.restore(path, restore_args=args)


def load_params_from(directory: str, params: Any, *, prefixes: Any = None,
                     with_unused: bool = False) -> tuple[Any, ...]:
  """Variables of `params` (a model state) replaced by same-named arrays of another run.

  `directory` is a run's workdir (its latest checkpoint) or one checkpoint's
  `state` folder. `prefixes` maps name prefixes of that checkpoint's model to
  prefixes of this model (a mapping or (source, target) pairs, e.g.
  {"backbone/": "encoder/"}: a pretrained backbone into a bigger model); then only
  variables under a target prefix are loaded, each from the source name with the
  prefix swapped. Without `prefixes` every variable is looked up by its own name.

  Returns the new variables and the names of this model's variables that were
  looked for and not found (they keep their initial values); with `with_unused`,
  also the names of the source's variables (under a source prefix, if any) that
  were not used. An array found with another shape raises ValueError naming it.
  """
  from jhseg.train.optim import parameter_name

  path = os.path.abspath(directory)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    manager = ocp.CheckpointManager(os.path.join(path, "checkpoints"), item_names=("state", "meta"))
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"config.init_from={directory!r} has no checkpoint")
    path = os.path.join(path, "checkpoints", str(step), "state")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.init_from={directory!r}: no checkpoint directory at {path}")
  source = read_state_arrays(path)
  flat = {}
  # The run state is (model, optimizer): model variables live under "0/".
  jax.tree_util.tree_map_with_path(
      lambda p, x: flat.__setitem__(parameter_name(p)[2:], x)
      if parameter_name(p).startswith("0/") else None, source)
  pairs = list((prefixes.items() if hasattr(prefixes, "items") else prefixes) or [("", "")])
  missing, used = [], set()

  def source_name(name: str) -> str | None:
    for src, dst in pairs:
      if name.startswith(dst):
        return src + name[len(dst):]
    return None

  def replace(p, x):
    name = parameter_name(p)
    wanted = source_name(name)
    if wanted is None:  # outside every target prefix: keeps its initial value
      return x
    if wanted not in flat:
      missing.append(name)
      return x
    used.add(wanted)
    value = np.asarray(flat[wanted])
    if value.shape != x.shape:
      origin = "" if wanted == name else f" (from {wanted})"
      raise ValueError(f"init_from {directory}: parameter {name}{origin} has shape "
                       f"{value.shape} there; the model expects {x.shape}")
    return jax.device_put(value.astype(x.dtype), x.sharding)

  replaced = jax.tree_util.tree_map_with_path(replace, params)
  unused = sorted(n for n in flat if n not in used and any(n.startswith(s) for s, _ in pairs))
  return (replaced, missing, unused) if with_unused else (replaced, missing)
