"""The engine's configuration fields, checked before a run starts.

A typo in a config (or a `--config.x=...` override) fails here, in one line,
with the list of valid fields instead of being silently ignored.

`ENGINE_FIELDS` maps each engine section (a dotted path; "" is the top level,
`*` stands for any name, e.g. "evals.*" for every named evaluator) to its
field names. Sections that are not in the table (`model`, `loss`, `eval`,
`data.augment`, ...) belong to the task: their valid fields are the ones the
config file defines. Adding a field to the engine is adding its name here.
"""
from __future__ import annotations

import numbers

import ml_collections

ENGINE_FIELDS = {
    "": ("task", "seed", "num_train_steps", "log_every_steps", "eval_every_steps",
         "checkpoint_every_steps", "init_from", "data", "optim", "checkpoint", "plateau",
         "model", "loss", "eval", "distributed", "evals"),
    "data": ("name", "data_dir", "train_split", "eval_split", "test_split", "batch_size",
             "eval_batch_size",
             "num_eval_examples", "auto_build", "num_threads", "image_size", "augment",
             "repeated_augmentation"),
    "optim": ("name", "learning_rate", "schedule", "warmup_steps", "end_learning_rate",
              "decay_fractions", "decay_factor", "momentum", "nesterov", "b1", "b2", "eps",
              "weight_decay", "grad_clip_norm", "grad_accum_steps", "groups", "default_lr_mults",
              "phase_boundaries", "frozen", "kwargs", "layer_decay"),
    "checkpoint": ("keep", "best_metric", "best_mode", "async"),
    "plateau": ("metric", "factor", "patience", "mode", "threshold", "min_scale"),
    "distributed": ("coordinator_address", "num_processes", "process_id", "cpu_collectives"),
}

# Engine fields the command line may set although a config file leaves them out: added as
# typed placeholders (None, yet with a type to parse `--config.<field>=...` into).
ENGINE_PLACEHOLDERS = {
    "distributed.coordinator_address": str,
    "distributed.num_processes": int,
    "distributed.process_id": int,
    "distributed.cpu_collectives": str,
    "checkpoint.async": bool,
    "data.repeated_augmentation": int,
}


class ConfigFieldError(ValueError):
  """An unknown or malformed config field (one line, with the valid names)."""


def engine_fields(section: str) -> tuple[str, ...] | None:
  """The engine's field names of `section` ("a.b"), or None for a task-owned section."""
  parts = section.split(".") if section else []
  for pattern, names in ENGINE_FIELDS.items():
    keys = pattern.split(".") if pattern else []
    if len(keys) == len(parts) and all(k in ("*", p) for k, p in zip(keys, parts)):
      return names
  return None


def valid_fields(node: ml_collections.ConfigDict | None, section: str) -> list[str]:
  """The names valid in `section`: the engine's for its sections, else those `node` has."""
  names = engine_fields(section)
  if names is not None:
    return sorted(names)
  return sorted(node.keys()) if node is not None else []


def unknown_field_error(section: str, key: str, node=None) -> ConfigFieldError:
  where = f"config.{section}" if section else "config"
  return ConfigFieldError(f"unknown field {where}.{key}; valid fields of {where}: "
                          f"{', '.join(valid_fields(node, section))}")


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigFieldError naming any unknown engine field and the valid ones."""

  def visit(node, section: str) -> None:
    names = engine_fields(section)
    for key in node.keys():
      if names is not None and key not in names:
        raise unknown_field_error(section, key, node)
      child = node[key]
      path = f"{section}.{key}" if section else key
      if isinstance(child, (ml_collections.ConfigDict, dict)):
        visit(child, path)

  visit(config, "")
  for required in ("task", "num_train_steps", "data"):
    if required not in config:
      raise ConfigFieldError(f"config.{required} is required")
  steps = config.num_train_steps
  if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
    raise ConfigFieldError(
        f"config.num_train_steps={steps!r}: expected an integer >= 1 (the total number of "
        "training steps; to evaluate a trained run use `python -m jhseg.evaluate` on its "
        "predictions, or `python -m jhseg.infer --workdir=RUN`)")
