"""CAST trained supervised with DeiT's recipe (Ke, Mo, Yu, ICLR 2024; `jhseg.tasks.cast_deit`).

Usage (the CAST entry point takes any config file):
  python -m experiments.cast --config=experiments/configs/cast_deit.py:tiny \
      --workdir=/tmp/cast-deit --config.data.data_dir=/tmp/cast-deit-tfds
  # ImageNet-1K (paper Table 12). TFDS's own `imagenet2012` builder reads the two manual
  # archives: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from
  # https://image-net.org/download-images, after registering) in MANUAL, then
  #   tfds build imagenet2012 --manual_dir=MANUAL --data_dir=D --file_format=array_record
  # (the validation labels ship with TFDS), and train with
  python -m experiments.cast --config=experiments/configs/cast_deit.py:imagenet \
      --workdir=/tmp/cast-deit-in1k --config.data.data_dir=D
Variants (`:arg`):
  tiny      (default) synthetic scenes (built offline on first use) labelled by their
            largest object (5 classes), a CAST of width 32 on 64^2 views of the 32^2
            scenes with the whole DeiT recipe; classification accuracy and the hierarchy
            evaluation of the MoCo task. A CPU-minutes run, not the paper's numbers; no
            model EMA and no repeated augmentation (the README's numbers are without).
  imagenet  CAST-S with the paper's Table 12 / the authors' `main_suppix.py` settings:
            batch 1024, 300 epochs with 5 of warm-up, lr 5e-4 x 1024 / 512, wd 0.05,
            drop path 0.1, RandAugment(9, 0.5), random erasing 0.25, label smoothing
            0.1, mixup 0.8, cutmix 1.0, model EMA 0.99996 (kept in the checkpoints, not
            evaluated, as the authors), repeated augmentation 3 (DeiT's RASampler;
            `jhseg.data.repeated_augmentation`); top-1 / top-5 on the 50 000 validation
            images.
  imagenet_base  the same for CAST-B.
  partimagenet_figure_ground  `imagenet` plus figure-ground segmentation from the class
            token's attention on PartImageNet's val split at the last step (foreground =
            the annotated object's parts; the authors' 224^2 centre view), on every image
            and on the dog images (`figure_ground_dogs`). Build it into
            the same D first: tfds build partimagenet --imports=tfds_builders
            --manual_dir=M --data_dir=D (tfds_builders/partimagenet/README.md).
"""
import importlib

import ml_collections

from experiments.configs import _engine

# What `tfds build imagenet2012` needs in --manual_dir (TFDS's builder reads them as is).
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def _cast():
  """The MoCo config module (its encoder / eval fields and constants are shared)."""
  return importlib.import_module("experiments.configs.cast")


def _deit_learning_rate(batch_size: int) -> float:
  return 5e-4 * batch_size / 512  # the authors' linear scaling rule


def _no_weight_decay_group() -> ml_collections.ConfigDict:
  """timm's create_optimizer: no decay on biases, normalisation scales and the model's
  `no_weight_decay()` (class token, position table)."""
  group = ml_collections.ConfigDict()
  group.name = "no_weight_decay"
  group.pattern = r".*/(bias|scale|cls_token|pos_embed)(/value)?"
  group.lr_mults = 1.0
  group.optim = ml_collections.ConfigDict({"weight_decay": 0.0})
  return group


def _base() -> ml_collections.ConfigDict:
  # The MoCo config's model / eval fields: the MoCo task's evaluations run on this encoder.
  config = _cast()._base()
  config.task = "cast_deit"
  del config.model.moco
  config.data.augment = ml_collections.ConfigDict()  # jhseg.tasks.cast_deit.DeiTAugmentOptions
  config.data.augment.crop_size = 224
  config.data.augment.min_scale = 0.08
  config.data.augment.rand_augment = True
  config.data.augment.magnitude = 9.0
  config.data.augment.magnitude_std = 0.5
  config.data.augment.erase_probability = 0.25

  config.model.num_classes = 1000
  # The authors' DeiT CAST learns its position table (`cast_models/cast_deit.py`), one
  # cell per stem cell of the training crop (28 at 224^2), row 0 for the class token.
  config.model.position_embedding = "learned"
  config.model.position_grid = config.data.augment.crop_size // 8
  config.model.drop_path_rate = 0.1
  # Model EMA (timm's ModelEma; jhseg.tasks.cast_deit): 0 = off. The variants that follow
  # the authors set their 0.99996; they evaluate the model itself, hence eval.use_ema False.
  config.model.ema_decay = 0.0
  config.model.superpixels.num_superpixels = 196
  config.model.superpixels.num_iterations = 15    # the authors' deit/datasets_seeds.py
  config.model.superpixels.histogram_bins = 5

  config.loss = ml_collections.ConfigDict()
  config.loss.mixing = ml_collections.ConfigDict()  # jhseg.data.mixing.MixOptions
  config.loss.mixing.mixup_alpha = 0.8
  config.loss.mixing.cutmix_alpha = 1.0
  config.loss.mixing.mix_prob = 1.0
  config.loss.mixing.switch_prob = 0.5
  config.loss.mixing.smoothing = 0.1

  config.eval.crop_ratio = 0.875                  # DeiT's --eval-crop-ratio
  config.eval.use_ema = False                     # True: every evaluation on the EMA encoder

  config.optim.name = "adamw"
  config.optim.schedule = "warmup_cosine"
  config.optim.weight_decay = 0.05
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.end_learning_rate = 1e-5           # timm's --min-lr
  config.optim.groups = [_no_weight_decay_group()]
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = _base()
  if arg == "partimagenet_figure_ground":
    return partimagenet_figure_ground(get_config("imagenet"))
  if arg in (None, "tiny"):
    config.data.name = "synthetic_scenes/tiny"
    config.data.batch_size = 8
    config.data.augment.crop_size = 64            # 32^2 scenes enlarged: 8x8 stem cells
    config.model.position_grid = 64 // 8
    config.data.augment.min_scale = 0.3
    config.model.size = "cast_tiny"
    config.model.num_classes = 5                  # label_tree.OBJECT_CLASSES
    config.model.superpixels.num_superpixels = 36
    config.eval.scale = 2.0
    config.eval.image_size = (64, 64)
    config.eval.original_size = (32, 32)
    config.eval.num_superpixels = 36
    config.eval.segment_fields = ("parts",)
    # Same batch size as `hierarchy`: the jitted encoder compiles once for both.
    config.evals.classification = _engine.evaluator(
        "validation", method="classification", every_steps=40, batch_size=4)
    config.evals.hierarchy = _engine.evaluator("validation", method="hierarchy",
                                               every_steps=40, batch_size=4, num_examples=8)
    config.num_train_steps = 40
    config.log_every_steps = 10
    config.checkpoint_every_steps = 40
    config.optim.learning_rate = 1e-3             # CPU-minutes run, not the paper's
    config.optim.warmup_steps = 4
  elif arg in ("imagenet", "imagenet_base"):
    config.data.name = "imagenet2012"
    config.data.batch_size = 1024
    config.model.size = "cast_small" if arg == "imagenet" else "cast_base"
    config.model.ema_decay = 0.99996              # main_suppix.py: --model-ema on by default
    config.data.repeated_augmentation = 3         # main_suppix.py: --repeated-aug by default
    config.evals.classification = _engine.evaluator(
        "validation", method="classification", batch_size=256,
        every_steps=_cast().IMAGENET_TRAIN_IMAGES // 1024)  # each epoch, as DeiT
    steps_per_epoch = _cast().IMAGENET_TRAIN_IMAGES // 1024  # DeiT drops the last batch
    config.num_train_steps = 300 * steps_per_epoch
    config.optim.learning_rate = _deit_learning_rate(1024)
    config.optim.warmup_steps = 5 * steps_per_epoch
    config.checkpoint_every_steps = steps_per_epoch
  else:
    raise ValueError(f"unknown config variant {arg!r}; valid: None, 'tiny', 'imagenet', "
                     f"'imagenet_base', 'partimagenet_figure_ground'")
  return config


def partimagenet_figure_ground(config: ml_collections.ConfigDict, *,
                               every_steps: int | None = None) -> ml_collections.ConfigDict:
  """`config` plus the figure-ground evaluator on PartImageNet's val split (the split of
  the authors' notebooks), foreground = any annotated part (`object_class` > 0), on the
  authors' view: shorter side to 224, centre 224^2, 196 SEEDS superpixels. The dataset is
  read from the run's data_dir (`tfds build partimagenet`, tfds_builders/partimagenet)."""
  _cast().partimagenet_view(config)
  config.evals.figure_ground = _engine.evaluator(
      "val", method="figure_ground", dataset="partimagenet", batch_size=64,
      every_steps=every_steps)
  # The same on the dog images only (appendix B's PartImageNet figure shows dogs).
  config.evals.figure_ground_dogs = _engine.evaluator(
      "val", method="figure_ground", dataset="partimagenet", batch_size=64,
      every_steps=every_steps, options={"image_classes": _cast().IMAGENET_DOG_CLASSES})
  return config
