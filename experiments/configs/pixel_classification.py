"""Per-pixel object-class classification on the synthetic scenes (engine baseline).

Usage:
  python -m experiments.pixel_classification \
      --config=experiments/configs/pixel_classification.py:tiny --workdir=/tmp/pc
Variants (`:arg`): default (none) and `tiny` (a CPU-minutes run).
"""
import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "pixel_classification"
  config.seed = 0
  config.num_train_steps = 2000
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.init_from = ""

  config.data = ml_collections.ConfigDict()
  config.data.name = "synthetic_scenes"          # TFDS name[/config]; built on first use.
  # Typed placeholders: None by default, yet settable from the command line.
  config.data.data_dir = placeholder(str)        # None: TFDS default (~/tensorflow_datasets).
  config.data.train_split = "train"
  config.data.eval_split = "validation"
  config.data.test_split = "test"                # Final evaluation of the last model.
  config.data.batch_size = 32                    # Global; divisible by the device count.
  config.data.eval_batch_size = 32
  config.data.num_eval_examples = placeholder(int)  # None: the whole split.

  config.model = ml_collections.ConfigDict()
  config.model.label_field = "object_class"
  config.model.num_classes = 5                   # Background and the four object classes.
  config.model.width = 32
  config.model.depth = 4

  config.optim = ml_collections.ConfigDict()
  config.optim.name = "adam"
  config.optim.learning_rate = 3e-3
  config.optim.schedule = "warmup_cosine"
  config.optim.warmup_steps = 100
  config.optim.grad_accum_steps = 1

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.keep = 2
  config.checkpoint.best_metric = "eval/miou"
  config.checkpoint.best_mode = "max"

  if arg == "tiny":
    config.data.name = "synthetic_scenes/tiny"
    config.num_train_steps = 40
    config.log_every_steps = 10
    config.eval_every_steps = 20
    config.checkpoint_every_steps = 20
    config.data.batch_size = 8
    config.data.eval_batch_size = 8
    config.model.width = 8
    config.model.depth = 2
    config.optim.warmup_steps = 5
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; valid: None, 'tiny'")
  return config
