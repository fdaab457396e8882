"""A run's configuration on disk: `config.json` and `config_history.jsonl`.

`config.json` is the configuration a run was started with; it is written once
and never overwritten by a resume (so `jhseg.infer` can always rebuild the
model of the checkpoints). Every start appends a line to
`config_history.jsonl`: the time, the fields changed since the previous
start (`{"field": [old, new]}`) and the whole configuration then in force.

On resume (the workdir has checkpoints) the new configuration is compared
with the one in force before anything is written. Fields that change the
model, the optimizer's state or the data stream (`REFUSED`) refuse to resume,
listing every differing field; the schedule length, the evaluation,
logging and checkpoint cadence and the infrastructure fields (`FREE`) may
change; other changes (e.g. the learning rate) are allowed with a warning.
All of them are recorded in the history.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"

# Dotted field prefixes whose change makes the checkpoints unusable or the data stream another.
REFUSED = ("task", "seed", "model", "data.name", "data.image_size", "data.batch_size",
           "data.train_split", "data.augment", "data.repeated_augmentation", "optim.name",
           "optim.grad_accum_steps", "optim.groups", "optim.frozen")
# Prefixes that may change on resume without a warning.
FREE = ("num_train_steps", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
        "checkpoint", "distributed", "init_from", "eval", "evals", "data.data_dir",
        "data.num_threads", "data.eval_batch_size", "data.num_eval_examples", "data.auto_build",
        "data.eval_split", "data.test_split")


class ConfigMismatchError(ValueError):
  """The new configuration cannot resume the workdir's checkpoints."""


def _matches(field: str, prefixes: tuple[str, ...]) -> bool:
  return any(field == p or field.startswith(p + ".") for p in prefixes)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict) and tree:
    out = {}
    for key, value in tree.items():
      out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out
  return {prefix: tree}


def as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as `config.json` stores it (tuples become lists)."""
  return json.loads(config.to_json_best_effort(sort_keys=True))


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
  """`{field: [old, new]}` for every leaf that differs (absent counts as None)."""
  a, b = _flatten(old), _flatten(new)
  return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and not (a.get(k) in (None, {}) and b.get(k) in (None, {}))}


def _has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(s.isdigit() for s in os.listdir(directory))


def _config_in_force(workdir: str) -> dict[str, Any] | None:
  history = os.path.join(workdir, HISTORY_FILE)
  if os.path.exists(history):
    with open(history) as f:
      lines = [line for line in f if line.strip()]
    for line in reversed(lines):
      try:
        return json.loads(line)["config"]
      except (ValueError, KeyError):
        continue  # A line cut by a kill.
  path = os.path.join(workdir, CONFIG_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return None


def prepare(config: ml_collections.ConfigDict, workdir: str) -> dict[str, list[Any]]:
  """Checks `config` against the workdir's run, then records it; returns the changed fields.

  Raises ConfigMismatchError, before writing anything, when resuming
  checkpoints with a change of a `REFUSED` field.
  """
  new = as_json(config)
  resuming = _has_checkpoints(workdir)
  old = _config_in_force(workdir) if resuming else None
  changes = changed_fields(old, new) if old is not None else {}
  refused = {k: v for k, v in changes.items() if _matches(k, REFUSED)}
  if refused:
    listed = "; ".join(f"{k}: {v[0]!r} -> {v[1]!r}" for k, v in refused.items())
    raise ConfigMismatchError(
        f"cannot resume {workdir}: its checkpoints were made with another model or data "
        f"stream. Differing fields: {listed}. Use another --workdir (with "
        f"--config.init_from={workdir} to start from its parameters), or the same values.")
  others = [k for k in changes if not _matches(k, FREE)]
  if others:
    logging.warning("resuming %s with changed fields %s (recorded in %s)", workdir,
                    ", ".join(others), HISTORY_FILE)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    if not resuming or not os.path.exists(os.path.join(workdir, CONFIG_FILE)):
      with open(os.path.join(workdir, CONFIG_FILE), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed": resuming,
             "changed": changes, "config": new}
    with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
      f.write(json.dumps(entry) + "\n")
  return changes
