"""HiPoSeg: DeepLabV3+ with hierarchical prototype learning (training only).

Usage:
  python -m experiments.hiposeg --config=experiments/configs/hiposeg.py:tiny --workdir=/tmp/hp \
      --config.data.data_dir=/tmp/hp-tfds
  # the DeepLabV3+ baseline: the same run with the HiPoSeg losses off
  python -m experiments.hiposeg --config=experiments/configs/hiposeg.py:tiny --workdir=/tmp/hp-base \
      --config.data.data_dir=/tmp/hp-tfds --config.loss.hiposeg=False
  # PASCAL-Part-108 (build first from the release layout, see tfds_builders/pascal_part_108):
  tfds build tfds_builders/pascal_part_108 --manual_dir=MANUAL --data_dir=D
  python -m experiments.hiposeg --config=experiments/configs/hiposeg.py:pascal_part_108 \
      --workdir=/tmp/hp-pp --config.data.data_dir=D

Variants (`:arg`):
  tiny (default)        synthetic scenes (built offline on first use), 13 parts -> 5 objects,
                        ResNet-18 at width 8, a CPU-minutes run.
  pascal_part_108       the paper's PASCAL-Part-108 setting (section 4.1): ResNet-101
                        DeepLabV3+ at output stride 16, SGD lr 1e-2 momentum 0.9 weight decay
                        1e-4, poly decay, 512x512 crops, batch 16, 60k iterations
                        (`model.pretrained` = torchvision ResNet-101 weights file).
  pascal_part_108_tiny  the same data at CPU size (ResNet-18 width 8, 96x96 crops of images
                        resized to a 128-pixel long side, evaluation at 128): a smoke-level
                        measurement on the 18-image sample `../shared/data/pascal_part_sample`.
  cityscapes            Cityscapes 19 classes -> 7 categories (builder `cityscapes_hier`),
                        512x1024 crops of the full 1024x2048 images, batch 8, 80k iterations,
                        evaluated at full resolution on `validation` (section 4.1).
  mapillary_vistas      Mapillary Vistas v2.0, 124 classes -> 17 mid -> 7 top groups (builder
                        `mapillary_vistas`; HiPoSeg uses class -> mid), long side resized to
                        2048 (HSSN's data config), 512x1024 crops, batch 8, 80k iterations.
  ade20k                ADE20K 150 classes (builder `ade20k`), 512x512 crops, batch 16, 60k
                        iterations. The 150 -> 14 tree is not shipped (tfds_builders/ade20k
                        says why): this variant needs
                        `--config.model.label_tree_file=TREE.json` (LabelTree.to_metadata
                        format) and fails naming that field without it.
  All paper variants: ResNet-101 DeepLabV3+ at output stride 16, SGD lr 1e-2 momentum 0.9
  weight decay 1e-4, poly decay (section 4.1). Build the data first, e.g.
    tfds build tfds_builders/cityscapes_hier --manual_dir=CITYSCAPES --data_dir=D
Ablations (Tables 5-6): `ABLATIONS` names the loss switches of each row and
`with_ablation(config, name)` applies one to any variant; the variants `tiny_<name>`
(e.g. `tiny_high`) are the tiny run with one applied. `bench/hiposeg_ablation.py` runs them
all and writes the per-level mIoU table. Joint training (Table 12): `config.loss.staged=False`.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs import _engine


def _base() -> ml_collections.ConfigDict:
  config = _engine.engine_config("hiposeg")
  config.data.image_size = (512, 512)       # training crop (section 4.1)
  config.data.augment = ml_collections.ConfigDict()
  config.data.augment.base_size = placeholder(int)  # resize the long side first (None: no)
  config.data.augment.scale_range = (0.5, 2.0)      # DeepLabV3+ recipe
  config.data.augment.flip = True

  config.model = ml_collections.ConfigDict()
  config.model.label_tree = "pascal_part_108"       # jhseg.tasks.hiposeg.LABEL_TREES
  config.model.label_tree_file = placeholder(str)   # JSON tree; overrides label_tree
  config.model.label_fields = ("part_class", "object_class")  # finest first
  config.model.depth = 101
  config.model.output_stride = 16
  config.model.width = 64
  config.model.aspp_features = 256
  config.model.low_level_features = 48
  config.model.decoder_features = 256
  config.model.pretrained = ""                      # torchvision ResNet weights (width 64)
  config.model.head = ml_collections.ConfigDict()   # g_phi (eq. 3), training only
  config.model.head.stages = ("decoder", "aspp")
  config.model.head.dim = 256                       # d'

  config.loss = ml_collections.ConfigDict()
  config.loss.hiposeg = True                        # False: the DeepLabV3+ baseline
  config.loss.weights = ml_collections.ConfigDict(  # lambda_1..6 of eq. 14
      {"ce": 1.0, "fh": 0.1, "hh": 0.1, "fl": 0.1, "ll": 0.1, "align": 0.1})
  config.loss.staged = True                         # the phased schedule of section 3.2
  config.loss.phase_starts = (0.075, 0.225, 0.375)
  config.loss.temperature = 0.2                     # tau
  config.loss.repulsion_temperature = 0.5           # kappa
  config.loss.alpha = 1.0
  config.loss.beta = 1.0
  config.loss.margin_in = 0.25                      # sigma_1
  config.loss.margin_out = 1.0                      # sigma_2
  config.loss.momentum = 0.9                        # m of eq. 15
  config.loss.renormalize = True
  config.loss.epsilon = 1e-6
  config.loss.num_samples = 1024                    # pixels per image for L_fh / L_fl
  config.loss.class_balanced = True
  config.loss.feature_targets = "memory"            # losses.hiposeg.FEATURE_TARGETS
  config.loss.prototype_targets = "batch"           # losses.hiposeg.PROTOTYPE_TARGETS

  config.eval = ml_collections.ConfigDict()
  config.eval.size = placeholder(int)               # long side at evaluation (None: as is)
  config.eval.pad_size = (512, 512)                 # fixed shape when eval.size is None
  config.eval.num_pictures = 4
  config.eval.tsne_pixels_per_class = 20            # embedding_tsne.png (Fig. 4); 0: none
  config.eval.tsne_batches = 2                      # sampled from the first batches

  config.checkpoint.best_metric = "eval/val/miou_part"
  config.checkpoint.best_mode = "max"
  return config


def _paper_optim(config: ml_collections.ConfigDict) -> None:
  config.optim.name = "momentum"
  config.optim.momentum = 0.9
  config.optim.weight_decay = 1e-4
  config.optim.learning_rate = 1e-2
  config.optim.schedule = "poly"


def _cpu_model(config: ml_collections.ConfigDict) -> None:
  config.model.depth = 18
  config.model.width = 8
  config.model.aspp_features = 32
  config.model.low_level_features = 8
  config.model.decoder_features = 32
  config.model.head.dim = 32


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg and arg.startswith("tiny_") and arg[len("tiny_"):] in ABLATIONS:
    return with_ablation(get_config("tiny"), arg[len("tiny_"):])
  config = _base()
  if arg in (None, "tiny"):
    config.data.name = "synthetic_scenes/tiny"
    config.model.label_tree = "synthetic_scenes"
    config.data.image_size = (32, 32)
    config.data.augment.scale_range = (1.0, 1.0)
    config.data.batch_size = 8
    _cpu_model(config)
    config.loss.num_samples = 64
    config.evals.val = _engine.evaluator("validation", every_steps=150, batch_size=8)
    config.evals.test = _engine.evaluator("test", batch_size=8)  # last step
    config.eval.size = 32
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.optim.name = "adam"                      # from scratch on CPU, not the paper's
    config.optim.learning_rate = 3e-3
    config.optim.schedule = "constant"
  elif arg == "pascal_part_108":
    config.data.name = "pascal_part_108"
    config.data.batch_size = 16
    # The benchmark has train / test only (4,998 / 5,105 images); no selection split.
    config.evals.test = _engine.evaluator("test", every_steps=5000, batch_size=8)
    config.checkpoint.best_metric = "eval/test/miou_part"
    config.num_train_steps = 60000
    config.log_every_steps = 50
    config.checkpoint_every_steps = 5000
    _paper_optim(config)
  elif arg == "pascal_part_108_tiny":
    config.data.name = "pascal_part_108"
    config.data.image_size = (96, 96)
    config.data.augment.base_size = 128
    config.data.batch_size = 4
    _cpu_model(config)
    config.loss.num_samples = 256
    config.evals.test = _engine.evaluator("test", batch_size=4)  # last step
    config.checkpoint.best_metric = "eval/test/miou_part"
    config.eval.size = 128
    config.num_train_steps = 300
    config.log_every_steps = 25
    config.optim.name = "adam"
    config.optim.learning_rate = 3e-3
    config.optim.schedule = "constant"
  elif arg in ("cityscapes", "mapillary_vistas", "ade20k"):
    _scene_parsing(config, arg)
  else:
    raise ValueError(f"unknown config variant {arg!r}; valid: {list(VARIANTS)}")
  return config


# Tables 5-6 (section 4.3): name -> (HiPoSeg head on, the loss terms switched off).
# Table 6's "high-level only" / "low-level only" / "both" are Table 5's rows 2, 3 and 5.
ABLATIONS = {
    "ce": (False, ()),                     # L_ce alone: the DeepLabV3+ baseline
    "high": (True, ("fl", "ll", "align")),  # + L_fh + L_hh (parent prototypes only)
    "low": (True, ("fh", "hh", "align")),   # + L_fl + L_ll (child prototypes only)
    "high_low": (True, ("align",)),         # + L_fh + L_hh + L_fl + L_ll, no alignment
    "full": (True, ()),                     # every term (eq. 14)
}


def with_ablation(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """`config` with the loss switches of the ablation row `name` (ABLATIONS)."""
  if name not in ABLATIONS:
    raise ValueError(f"unknown HiPoSeg ablation {name!r}; valid: {list(ABLATIONS)}")
  hiposeg, off = ABLATIONS[name]
  config.loss.hiposeg = hiposeg
  for term in off:
    config.loss.weights[term] = 0.0
  return config


VARIANTS = (None, "tiny", "pascal_part_108", "pascal_part_108_tiny", "cityscapes",
            "mapillary_vistas", "ade20k", *(f"tiny_{name}" for name in ABLATIONS))
# variant -> (TFDS builder, label tree, crop, batch, iterations, long side before the random
# scale (None: as released), evaluation long side (None: full resolution), evaluation pad).
_SCENE_PARSING = {
    "cityscapes": ("cityscapes_hier", "cityscapes", (512, 1024), 8, 80000, None, None,
                   (1024, 2048)),
    "mapillary_vistas": ("mapillary_vistas", "mapillary_vistas", (512, 1024), 8, 80000, 2048,
                         2048, None),
    "ade20k": ("ade20k", "ade20k", (512, 512), 16, 60000, None, None, (2048, 2048)),
}


def _scene_parsing(config: ml_collections.ConfigDict, variant: str) -> None:
  """Cityscapes / Mapillary Vistas / ADE20K at the paper's settings (section 4.1)."""
  (dataset, tree, crop, batch, steps, base_size, eval_size,
   eval_pad) = _SCENE_PARSING[variant]
  config.data.name = dataset
  config.data.image_size = crop
  config.data.batch_size = batch
  config.data.augment.base_size = base_size
  config.model.label_tree = tree
  config.model.label_fields = ("label",)  # coarser levels from the tree
  config.evals.val = _engine.evaluator("validation", every_steps=8000, batch_size=2)
  config.checkpoint.best_metric = "eval/val/miou_class"
  config.eval.size = eval_size
  if eval_pad:
    config.eval.pad_size = eval_pad
  config.num_train_steps = steps
  config.log_every_steps = 50
  config.checkpoint_every_steps = 8000
  _paper_optim(config)
