"""The engine part shared by every experiment config (not a config itself).

`engine_config(task)` gives the fields `jhseg.train.train_and_evaluate` reads
(run length, data, evaluators, optimiser, checkpoints) with their defaults;
each method's config fills in its values and adds `model`, `loss`, `eval`.
`evaluator(split, ...)` is one entry of `config.evals` (see
`jhseg.train.evaluators`): metrics `eval/<name>/...`, outputs
`workdir/eval/<name>/<step>/`.

None-valued fields are typed placeholders so that they stay settable from the
command line (`--config.evals.val.num_examples=16`).

`config.init_from` is a path (a run's workdir or a checkpoint's `state`
folder). To load under other names, replace it in a config file by a mapping:
`config.init_from = ml_collections.ConfigDict({"workdir": PATH,
"prefixes": {"backbone/": "encoder/"}})` (source prefix -> this model's prefix).
"""
from __future__ import annotations

import ml_collections
from ml_collections.config_dict import placeholder


def evaluator(split: str, *, every_steps: int | None = None, num_examples: int | None = None,
              batch_size: int | None = None, method: str = "default",
              dataset: str | None = None, data_dir: str | None = None,
              options: dict | None = None) -> ml_collections.ConfigDict:
  """One `config.evals` entry; None fields default to the training data's values.

  every_steps=None evaluates at the last step only (e.g. a held-out test split).
  """
  spec = ml_collections.ConfigDict()
  spec.method = method
  spec.dataset = placeholder(str) if dataset is None else dataset
  spec.data_dir = placeholder(str) if data_dir is None else data_dir
  spec.split = split
  spec.num_examples = placeholder(int) if num_examples is None else num_examples
  spec.batch_size = placeholder(int) if batch_size is None else batch_size
  spec.every_steps = placeholder(int) if every_steps is None else every_steps
  spec.options = ml_collections.ConfigDict(options or {})
  return spec


def engine_config(task: str) -> ml_collections.ConfigDict:
  """Engine fields with defaults; the caller sets data.name, evals, optim, ..."""
  config = ml_collections.ConfigDict()
  config.task = task
  config.seed = 0
  config.num_train_steps = 1000
  config.log_every_steps = 50
  config.checkpoint_every_steps = placeholder(int)  # None: evaluation steps and the last
  config.init_from = ""

  config.data = ml_collections.ConfigDict()
  config.data.name = ""                          # TFDS name[/config]
  # None: TFDS default (~/tensorflow_datasets).
  config.data.data_dir = placeholder(str)
  config.data.train_split = "train"
  config.data.batch_size = 8                     # global; divisible by the device count
  config.data.num_threads = 2

  # Named evaluators: config.evals.<name> = evaluator(...).
  config.evals = ml_collections.ConfigDict()

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"                     # jhseg.train.optim: jhseg or optax names
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"
  config.optim.grad_accum_steps = 1

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep = 2
  return config
