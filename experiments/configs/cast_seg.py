"""CAST fine-tuned for semantic segmentation (Ke, Mo, Yu, ICLR 2024, appendix E.5;
`jhseg.tasks.cast_seg`), initialised from a MoCo or DeiT CAST run.

Usage:
  python -m experiments.cast --config=experiments/configs/cast_seg.py:tiny \
      --workdir=/tmp/cast-seg --config.data.data_dir=/tmp/cast-seg-tfds \
      [--config.init_from=/tmp/cast]   # optional: a `cast.py:tiny` / `cast_deit.py:tiny` run
  # PASCAL VOC 2012 + SBD (build first: tfds build tfds_builders/voc2012_sbd
  #     --manual_dir=M --data_dir=D, see tfds_builders/voc2012_sbd/README.md):
  python -m experiments.cast --config=experiments/configs/cast_seg.py:voc \
      --workdir=/tmp/cast-voc --config.data.data_dir=D --config.init_from.workdir=RUN
`voc` sets `init_from` to the engine's prefix map {"encoder/": "encoder/"} (only the
pre-trained run's encoder is loaded; `--config.init_from.workdir` is required). `tiny`
starts from scratch unless `--config.init_from=RUN` is given: a plain path loads every
variable by its own name, which loads the encoder too (MoCo, DeiT and this model all
call it `encoder/`) and leaves fusion and head at their initialisation.
The encoder's position embedding follows the init_from run (its config.json, else its
checkpoint's `pos_embed` shape): a DeiT run's learned G x G table (G = its crop / 8: 28,
tiny 8), a MoCo run's fixed sin-cos. `model.position_embedding` / `position_grid` stay
unset here; a value given on the command line that differs from the run's fails, naming
the field and the run's value (`jhseg.tasks.cast_seg.follow_source_position`). To start
from a DeiT run's model EMA, map `{"ema_encoder/": "encoder/"}` instead.
Variants (`:arg`):
  tiny  (default) synthetic scenes' object classes (5 incl. background), a CAST of width 32
        (the `cast.py:tiny` / `cast_deit.py:tiny` encoder), 64^2 crops with 36 superpixels;
        mIoU on the validation split. A CPU-minutes run.
  voc   the paper's protocol: CAST-S, train_aug (10 582 images), 30k steps of batch 16,
        512^2 crops with 784 SEEDS superpixels, SGD momentum 0.9, lr 3e-3, weight decay
        1e-4, poly 0.9; single-scale mIoU on the 1 449 val images padded to 512^2.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs import _engine
from experiments.configs import cast


def encoder_from_run(workdir: str | None = None) -> ml_collections.ConfigDict:
  """`config.init_from`: the `encoder/` of a MoCo or DeiT CAST run (engine prefix map)."""
  spec = ml_collections.ConfigDict()
  spec.workdir = placeholder(str) if workdir is None else workdir
  spec.prefixes = ml_collections.ConfigDict({"encoder/": "encoder/"})
  return spec


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _engine.engine_config("cast_seg")

  config.data.augment = ml_collections.ConfigDict()  # jhseg.tasks.cast_seg.CropOptions
  config.data.augment.crop_size = 512
  config.data.augment.min_scale = 0.5
  config.data.augment.max_scale = 1.5

  config.model = cast.encoder_config()
  config.model.fusion_dropout = 0.2
  config.model.num_classes = 21
  config.model.label_field = "segmentation"
  config.model.superpixels = ml_collections.ConfigDict()
  config.model.superpixels.num_superpixels = 784  # at 512^2 (issue; SPML's n_segments)
  config.model.superpixels.num_iterations = 15
  config.model.superpixels.histogram_bins = 5

  config.eval = ml_collections.ConfigDict()
  config.eval.image_size = (512, 512)             # VOC images are at most 500 x 500
  config.eval.num_superpixels = 784

  config.optim.name = "momentum"
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.learning_rate = 3e-3
  config.optim.schedule = "poly"
  if arg in (None, "tiny"):
    config.data.name = "synthetic_scenes/tiny"
    config.data.batch_size = 8
    config.data.augment.crop_size = 64
    config.model.size = "cast_tiny"
    config.model.num_classes = 5                  # label_tree.OBJECT_CLASSES
    config.model.label_field = "object_class"
    config.model.superpixels.num_superpixels = 36
    config.eval.image_size = (32, 32)
    config.eval.num_superpixels = 16
    config.evals.val = _engine.evaluator("validation", every_steps=40, batch_size=8)
    config.num_train_steps = 40
    config.log_every_steps = 10
    config.checkpoint_every_steps = 40
    config.optim.learning_rate = 1e-2             # CPU-minutes run, not the paper's
  elif arg == "voc":
    del config["init_from"]                       # a str field in the engine's defaults
    config.init_from = encoder_from_run()
    config.data.name = "voc2012_sbd"
    config.data.train_split = "train_aug"
    config.data.batch_size = 16
    config.evals.val = _engine.evaluator("val", batch_size=8, every_steps=5000)
    config.num_train_steps = 30_000
    config.checkpoint_every_steps = 5000
  else:
    raise ValueError(f"unknown config variant {arg!r}; valid: None, 'tiny', 'voc'")
  return config
