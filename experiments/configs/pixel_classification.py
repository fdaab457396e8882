"""Per-pixel object-class classification on the synthetic scenes (engine baseline).

Usage:
  python -m experiments.pixel_classification \
      --config=experiments/configs/pixel_classification.py:tiny --workdir=/tmp/pc
Variants (`:arg`): default (none) and `tiny` (a CPU-minutes run).
Evaluators: `val` (validation split, every 500 steps) and `test` (the final model).
"""
import ml_collections

from experiments.configs import _engine


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _engine.engine_config("pixel_classification")
  config.num_train_steps = 2000
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500

  config.data.name = "synthetic_scenes"          # TFDS name[/config]; built on first use.
  config.data.batch_size = 32                    # Global; divisible by the device count.
  config.evals.val = _engine.evaluator("validation", every_steps=500, batch_size=32)
  config.evals.test = _engine.evaluator("test", batch_size=32)  # the last step only

  config.model = ml_collections.ConfigDict()
  config.model.label_field = "object_class"
  config.model.num_classes = 5                   # Background and the four object classes.
  config.model.width = 32
  config.model.depth = 4

  config.optim.name = "adam"
  config.optim.learning_rate = 3e-3
  config.optim.schedule = "warmup_cosine"
  config.optim.warmup_steps = 100

  config.checkpoint.best_metric = "eval/val/miou"
  config.checkpoint.best_mode = "max"

  if arg == "tiny":
    config.data.name = "synthetic_scenes/tiny"
    config.num_train_steps = 40
    config.log_every_steps = 10
    config.checkpoint_every_steps = 20
    config.evals.val.every_steps = 20
    config.data.batch_size = 8
    config.evals.val.batch_size = 8
    config.evals.test.batch_size = 8
    config.model.width = 8
    config.model.depth = 2
    config.optim.warmup_steps = 5
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: None, 'tiny'")
  return config
