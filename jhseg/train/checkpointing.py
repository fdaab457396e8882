"""Orbax checkpoints of a run: model and optimizer state, step, data position.

A checkpoint holds two items: `state` (the nnx state of model and optimizer,
with PRNG keys stored as raw key data) and `meta` (JSON: step, data iterator
state, plateau controller state). The last `keep` checkpoints are kept, plus
the best one by `best_metric` when set.

A checkpoint that cannot be written (full disk, quota, no permission) stops
the run with `CheckpointWriteError` naming the folder and the OS error: the
folder is probed when the run starts, step folders are created synchronously
(so a failing `mkdir` raises inside `save`, and no orbax thread is left
waiting minutes for a directory that will never exist), and an asynchronous
save's background result is collected by `check()` (called at every host
sync), at the next `save` and at `close`. "saved checkpoint" is logged only
once a save has committed.
"""
from __future__ import annotations

import json
import os
import tempfile
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


class CheckpointWriteError(OSError):
  """A checkpoint could not be written; the run stops (its last good checkpoint stays)."""


def _root_os_error(err: BaseException) -> BaseException:
  """The OSError behind `err` (orbax wraps it in its own exceptions), else `err`."""
  cause, seen = err, set()
  while cause is not None and id(cause) not in seen:
    if isinstance(cause, OSError):
      return cause
    seen.add(id(cause))
    cause = cause.__cause__ or cause.__context__
  return err


def _write_error(what: str, directory: str, err: BaseException) -> CheckpointWriteError:
  cause = _root_os_error(err)
  return CheckpointWriteError(f"could not write {what} in {directory}: "
                              f"{type(cause).__name__}: {cause}. The run stops; free space or "
                              "fix the folder's permissions, then start the same command to "
                              "resume from the last good checkpoint.")


def _probe_writable(directory: str) -> None:
  """Creates and removes a file in `directory`, raising CheckpointWriteError if it cannot."""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-probe-"):
      pass
  except OSError as err:
    raise _write_error("checkpoints", directory, err) from None


class CheckpointMismatchError(ValueError):
  """The checkpoint's arrays do not have the shapes of the state to restore."""


def _shapes_by_name(tree: Any) -> dict[str, tuple[int, ...]]:
  def key(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)

  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [key(k) for k in path]
    if names and names[-1] == "value":  # nnx variables store their array under "value".
      names = names[:-1]
    out["/".join(names)] = tuple(getattr(leaf, "shape", ()))
  return out


def _shape_mismatches(stored: Any, wanted: Any) -> list[str]:
  have, want = _shapes_by_name(stored), _shapes_by_name(wanted)
  lines = [f"{n}: checkpoint {have[n]}, this config {want[n]}"
           for n in want if n in have and have[n] != want[n]]
  lines += [f"{n}: not in the checkpoint" for n in want if n not in have]
  lines += [f"{n}: only in the checkpoint" for n in have if n not in want]
  return lines


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
        # None (a command-line placeholder left unset) means the default, asynchronous.
        enable_async_checkpointing=config.get("async") is not False,
        # Step folders made in `save` itself: a failing mkdir raises there, instead of in a
        # background thread whose siblings then wait orbax's 5-minute signal timeout.
        async_options=ocp.AsyncOptions(create_directories_asynchronously=False))
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if jax.process_index() == 0:
      _probe_writable(self.directory)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=("state", "meta"))
    self._uncommitted: int | None = None  # The step of an asynchronous save not yet confirmed.
    self._failed = False

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any],
           metrics: dict[str, float] | None = None) -> None:
    if self.best_metric and metrics is not None and self.best_metric not in metrics:
      raise KeyError(f"config.checkpoint.best_metric={self.best_metric!r} is not among the "
                     f"evaluation metrics {sorted(metrics)}")
    self._collect()
    args = ocp.args.Composite(state=ocp.args.StandardSave(_keys_to_data(state)),
                              meta=ocp.args.JsonSave(meta))
    try:
      self._manager.save(step, args=args, metrics=metrics, force=True)
    except Exception as err:  # orbax raises OSError, or its own errors wrapping one.
      self._failed = True
      raise _write_error(f"the checkpoint of step {step}", self.directory, err) from err
    self._uncommitted = step
    if not self._manager.is_saving_in_progress():
      self._collect()  # A synchronous save: committed (or failed) already.

  def check(self) -> None:
    """Raises CheckpointWriteError if an asynchronous save has failed; never blocks."""
    if self._uncommitted is not None and not self._manager.is_saving_in_progress():
      self._collect()

  def _collect(self) -> None:
    """Waits for the pending save's result: logs it as saved, or raises."""
    if self._uncommitted is None:
      return
    step, self._uncommitted = self._uncommitted, None
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as err:
      self._failed = True
      raise _write_error(f"the checkpoint of step {step}", self.directory, err) from err
    logging.info("saved checkpoint at step %d in %s", step, self.directory)

  def restore(self, state_like: Any, step: int | None = None) -> tuple[Any, dict[str, Any]]:
    step = self._manager.latest_step() if step is None else step
    wanted = _abstract(state_like)
    mismatches = _shape_mismatches(
        _state_metadata(os.path.join(self.directory, str(step), "state")), wanted)
    if mismatches:
      raise CheckpointMismatchError(
          f"checkpoint {step} in {self.directory} does not fit the model and optimizer of "
          f"this config ({len(mismatches)} arrays differ: {'; '.join(mismatches[:5])}). "
          "Resume with the run's own config.json, or start another --workdir.")
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(wanted), meta=ocp.args.JsonRestore()))
    return _data_to_keys(restored.state, state_like), restored.meta

  def wait(self) -> None:
    self._collect()

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
    self._collect()  # the step's own save has committed (or its failure is raised)
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
    """Waits for the last save (raising if it failed); after a failure, only releases."""
    if self._failed:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except  # Already reported.
        logging.info("orbax close after a failed save", exc_info=True)
      return
    try:
      self._collect()
    finally:
      if not self._failed:
        self._manager.close()


def _state_metadata(path: str) -> Any:
  """The array metadata (shapes, dtypes) of a checkpoint's `state` folder."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Quiets orbax's "Metadata file does not exist".
  try:
    metadata = ocp.PyTreeCheckpointer().metadata(path)
  finally:
    logging.set_verbosity(verbosity)
  tree = getattr(metadata, "item_metadata", metadata)
  return getattr(tree, "tree", tree)


def read_state_arrays(path: str) -> dict[str, Any]:
  """A checkpoint's `state` item as NumPy arrays, whatever devices wrote it.

  `path` is a `checkpoints/<step>/state` folder. Used to inspect runs and to
  initialise from runs made on another topology (other devices or hosts).
  """
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), _state_metadata(path))
  return ocp.PyTreeCheckpointer().restore(path, restore_args=args)


def init_from_parts(spec: Any) -> tuple[str, Any]:
  """(directory, prefix map or None) of `config.init_from` (a path or a mapping)."""
  if isinstance(spec, str):
    return spec, None
  unknown = sorted(set(spec.keys()) - {"workdir", "prefixes"})
  if unknown or not spec.get("workdir"):
    raise ValueError(f"config.init_from: expected a path or a mapping with 'workdir' (a run "
                     f"or checkpoint folder) and optional 'prefixes' {{source: target}}; got "
                     f"{dict(spec)}")
  return spec["workdir"], spec.get("prefixes")


def state_directory(directory: str, *, missing: str = "no checkpoint directory") -> str:
  """The `state` folder of `config.init_from`'s `directory`: a run's workdir (its latest
  checkpoint) or one checkpoint's `state` folder; `missing` words the error when neither."""
  path = os.path.abspath(directory)
  if os.path.isdir(os.path.join(path, "checkpoints")):
    manager = ocp.CheckpointManager(os.path.join(path, "checkpoints"), item_names=("state", "meta"))
    step = manager.latest_step()
    if step is None:
      raise FileNotFoundError(f"config.init_from={directory!r} has no checkpoint")
    path = os.path.join(path, "checkpoints", str(step), "state")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.init_from={directory!r}: {missing} at {path}")
  return path


def state_shapes(path: str) -> dict[str, tuple[int, ...]]:
  """Array shapes by '/'-joined name (nnx's `value` dropped, the model under "0/") of a
  checkpoint's `state` folder, read from its metadata: no array is loaded."""
  return _shapes_by_name(_state_metadata(path))


def load_params_from(directory: str, params: Any, *, prefixes: Any = None,
                     with_unused: bool = False) -> tuple[Any, ...]:
  """Variables of `params` (a model state) replaced by same-named arrays of another run.

  `directory` is a run's workdir (its latest checkpoint) or one checkpoint's
  `state` folder. `prefixes` maps name prefixes of that checkpoint's model to
  prefixes of this model (a mapping or (source, target) pairs, e.g.
  {"backbone/": "encoder/"}: a pretrained backbone into a bigger model); then only
  variables under a target prefix are loaded, each from the source name with the
  prefix swapped. Without `prefixes` every variable is looked up by its own name.

  RNG keys (`nnx.Rngs` streams, e.g. of dropout) are never loaded: the new run keys its
  own. Returns the new variables and the names of this model's variables that were
  looked for and not found (they keep their initial values); with `with_unused`,
  also the names of the source's variables (under a source prefix, if any) that
  were not used. An array found with another shape raises ValueError naming it.
  """
  from jhseg.train.optim import parameter_name

  source = read_state_arrays(state_directory(directory))
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
    if _is_key(x):  # an RNG stream's key: the new run keeps its own
      used.add(wanted)
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
