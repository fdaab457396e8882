"""The engine's configuration fields, checked before a run starts.

A typo in a config (or a `--config.x=...` override) fails here with the list
of valid fields instead of being silently ignored.
"""
from __future__ import annotations

import ml_collections

ENGINE_FIELDS = {
    "": ("task", "seed", "num_train_steps", "log_every_steps", "eval_every_steps",
         "checkpoint_every_steps", "init_from", "data", "optim", "checkpoint", "plateau",
         "model", "loss", "eval", "distributed", "evals"),
    "data": ("name", "data_dir", "train_split", "eval_split", "test_split", "batch_size",
             "eval_batch_size",
             "num_eval_examples", "auto_build", "num_threads", "image_size", "augment"),
    "optim": ("name", "learning_rate", "schedule", "warmup_steps", "end_learning_rate",
              "decay_fractions", "decay_factor", "momentum", "nesterov", "b1", "b2", "eps",
              "weight_decay", "grad_clip_norm", "grad_accum_steps", "groups", "default_lr_mults",
              "phase_boundaries", "frozen", "kwargs", "layer_decay"),
    "checkpoint": ("keep", "best_metric", "best_mode", "async"),
    "plateau": ("metric", "factor", "patience", "mode", "threshold", "min_scale"),
    "distributed": ("coordinator_address", "num_processes", "process_id", "cpu_collectives"),
}


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming any unknown field and the valid ones."""
  for section, valid in ENGINE_FIELDS.items():
    node = config if not section else config.get(section)
    if node is None:
      continue
    for key in node.keys():
      if key not in valid:
        where = f"config.{section}.{key}" if section else f"config.{key}"
        raise ValueError(f"unknown field {where}; valid fields of config{'.' + section if section else ''}: "
                         f"{sorted(valid)}")
  for required in ("task", "num_train_steps", "data"):
    if required not in config:
      raise ValueError(f"config.{required} is required")
