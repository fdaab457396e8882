"""CAST trained self-supervised with MoCo-v3 (Ke, Mo, Yu, ICLR 2024; `jhseg.tasks.cast`).

Usage:
  python -m experiments.cast --config=experiments/configs/cast.py:tiny --workdir=/tmp/cast \
      --config.data.data_dir=/tmp/cast-tfds
  # BSDS500 (build first: tfds build tfds_builders/bsds500 \
  #     --manual_dir=../shared/data/bsds500 --data_dir=D): MoCo on the 300 train+val images,
  # the hierarchy scored on the 200 test images next to SEEDS + colour merging:
  python -m experiments.cast --config=experiments/configs/cast.py:bsds500 \
      --workdir=/tmp/cast-bsds --config.data.data_dir=D
Variants (`:arg`):
  tiny     (default) synthetic scenes (built offline on first use), a CAST of width 32 on
           64^2 views of the 32^2 scenes; hierarchy (boundary / covering vs the colour
           baseline, level PNGs), k-NN and the linear probe on the scenes' `label`,
           figure-ground from the class token's attention and segment retrieval against
           the scenes' `object_class` (jhseg.tasks.cast_evals). A CPU-minutes run.
  tiny_tta `tiny` plus the test-time adaptation evaluator (appendix B).
  bsds500  a CPU-sized CAST (width 96, 4 heads, one block per level, clusters 64/32/16/8)
           with the paper's MoCo-v3 recipe (Table 11: AdamW, weight decay 0.1, warm-up then
           cosine, temperature 0.2, momentum 0.99 -> 1, 224^2 views with 196 SEEDS
           superpixels, output 256) for a short CPU budget, except: 150 steps of batch 16,
           lr 1e-3 (the scaling rule 1.5e-4 x 16 / 256 = 9e-6 barely moves in 150 steps),
           MLP heads 1024 wide instead of 4096. Evaluation at half resolution (objects at
           about the training scale), 98 superpixels, scored at full resolution.
  paper    CAST-S with the paper's IN-100 settings (batch 256, 200 epochs with 20 of
           warm-up) on BSDS500 train+val: the accelerator-sized run.
  imagenet CAST-S, MoCo-v3 on ImageNet-1K with Table 11's IN-1K column (batch 256, 100
           epochs with 10 of warm-up, lr 1.5e-4 x 256 / 256); linear probe (appendix E.5:
           90 epochs, batch 1024, lr 30, SGD momentum 0.9, no weight decay) and k-NN on
           the 50 000 validation images. Data: TFDS `imagenet2012` (manual; see
           cast_deit.py for the two archives and the build command).
  partimagenet_tta  `imagenet` with CAST-B, plus appendix B's test-time adaptation on
           PartImageNet val (`tfds build partimagenet`): dog vs non-dog prototypes of
           PartImageNet train, one TENT step per image, foreground IoU before / after.
  coco     CAST-S, MoCo-v3 on COCO train2017 (118 287 images) with Table 11's COCO column
           (400 epochs with 40 of warm-up), the paper's pre-training for VOC (Table 3a,
           appendix E.2); segment retrieval on VOC 2012 val against a train_aug memory
           (SegSort, 20 neighbours; appendix E.5). Data: TFDS `coco/2017`
           (`tfds build coco/2017 --data_dir=D --file_format=array_record`; images only are
           read) and this repository's `voc2012_sbd` in the same D.
  imagenet100  CAST-S, MoCo-v3 on IN-100 (this repository's `imagenet100` builder: CMC's
           100 classes, `tfds build imagenet100 --imports=tfds_builders --manual_dir=M`
           with the two ImageNet archives in M) with Table 11's IN-100 column (200 epochs
           with 20 of warm-up), the paper's ablation setting (Tables 1, 4, 6); linear
           probe (batch 256, lr 0.8) and k-NN on its 5 000 validation images.
"""
import ml_collections
from ml_collections.config_dict import placeholder

from experiments.configs import _engine


def encoder_config() -> ml_collections.ConfigDict:
  """The CAST encoder's fields, shared by the MoCo, DeiT and fine-tuning configs."""
  model = ml_collections.ConfigDict()
  model.size = "cast_small"                       # jhseg.models.cast.CAST_CONFIGS
  # Optional overrides of the named size (None: the size's value).
  model.dim = placeholder(int)
  model.depths = placeholder(tuple)
  model.num_heads = placeholder(int)
  model.num_clusters = placeholder(tuple)
  model.mlp_ratio = placeholder(float)
  # CASTConfig.position_embedding ("sincos" | "learned") and the learned table's side.
  model.position_embedding = placeholder(str)
  model.position_grid = placeholder(int)
  model.drop_path_rate = 0.0
  return model


def _base() -> ml_collections.ConfigDict:
  config = _engine.engine_config("cast")
  config.data.augment = ml_collections.ConfigDict()  # jhseg.tasks.cast.ViewOptions fields
  config.data.augment.crop_size = 224
  config.data.augment.min_scale = 0.08              # MoCo-v3's --crop-min

  config.model = encoder_config()
  config.model.superpixels = ml_collections.ConfigDict()
  config.model.superpixels.num_superpixels = 196  # SEEDS at 224^2 (paper sec. 4)
  config.model.superpixels.num_iterations = 20    # the authors' datasets_seeds.py
  config.model.moco = ml_collections.ConfigDict()
  config.model.moco.dim = 256                     # Table 11
  config.model.moco.mlp_dim = 4096
  config.model.moco.temperature = 0.2
  config.model.moco.momentum = 0.99               # cosine schedule to 1

  config.eval = ml_collections.ConfigDict()
  config.eval.scale = 1.0                         # image resize before SEEDS and the model
  config.eval.image_size = (224, 224)             # padded resized size, multiples of 8
  config.eval.original_size = (224, 224)          # padded original size (truths, image)
  config.eval.num_superpixels = 196
  config.eval.max_truths = 1
  config.eval.segment_fields = ("segmentations",)
  # Per-pixel classes for figure_ground / tta / retrieval (foreground = class > 0, 255 void).
  config.eval.label_field = placeholder(str)
  config.eval.linkage = "single"                  # colour baseline (as DEL's)
  config.eval.colour_scale = 20.0                 # LAB units per unit of L1 distance
  config.eval.boundary_max_distance = 0.0075
  # Thresholds of the boundary and region benchmarks (99 = BSDS). CAST's UCM has 5 levels;
  # the colour baseline's up to one per superpixel merge, matched at every threshold.
  config.eval.num_thresholds = 99
  config.eval.num_pictures = 4
  # Evaluation views of this side for datasets of varied sizes (None: the whole image at
  # `scale`): the shorter side resized to center_crop / center_crop_ratio (None: 1, the
  # authors' PartImageNet view), then the centre crop (jhseg.tasks.cast, cast_evals).
  config.eval.center_crop = placeholder(int)
  config.eval.center_crop_ratio = placeholder(float)

  config.optim.name = "adamw"
  config.optim.schedule = "warmup_cosine"
  config.optim.weight_decay = 0.1
  config.optim.b2 = 0.999
  return config


def _moco_learning_rate(batch_size: int) -> float:
  return 1.5e-4 * batch_size / 256  # the authors' linear scaling rule


IMAGENET_TRAIN_IMAGES = 1_281_167
# ImageNet-1K's dog breeds: labels 151 (n02085620, Chihuahua) to 268 (n02113978, Mexican
# hairless) in TFDS's imagenet2012 order, which the partimagenet builder's `label` follows.
IMAGENET_DOG_CLASSES = tuple(range(151, 269))
IMAGENET100_TRAIN_IMAGES = 127_000  # appendix E.2's rounded "127K": steps within 1%
COCO_TRAIN2017_IMAGES = 118_287


def _table11(config: ml_collections.ConfigDict, *, num_images: int, epochs: int,
             warmup_epochs: int, batch_size: int = 256) -> None:
  """Table 11's MoCo-v3 schedule for a dataset of `num_images` (the last partial batch
  of an epoch dropped, as the authors' loader)."""
  steps_per_epoch = num_images // batch_size
  config.data.batch_size = batch_size
  config.num_train_steps = epochs * steps_per_epoch
  config.optim.learning_rate = _moco_learning_rate(batch_size)
  config.optim.warmup_steps = warmup_epochs * steps_per_epoch
  config.checkpoint_every_steps = steps_per_epoch
  config.log_every_steps = 100


def _imagenet(config: ml_collections.ConfigDict, *, classes: int = 1000) -> None:
  if classes == 1000:
    config.data.name = "imagenet2012"
    _table11(config, num_images=IMAGENET_TRAIN_IMAGES, epochs=100, warmup_epochs=10)
    probe_batch, probe_lr = 1024, 30.0
  else:
    config.data.name = "imagenet100"
    _table11(config, num_images=IMAGENET100_TRAIN_IMAGES, epochs=200, warmup_epochs=20)
    probe_batch, probe_lr = 256, 0.8
  config.eval.center_crop = 224                   # MoCo-v3's Resize(256) + CenterCrop(224)
  config.eval.center_crop_ratio = 0.875
  config.eval.scale = 1.0
  config.eval.image_size = config.eval.original_size = (224, 224)
  # Appendix E.5: the probe (IN-1K batch 1024, lr 30; IN-100 batch 256, lr 0.8; scaled
  # by batch / 256 as MoCo-v3's main_lincls), 90 epochs; evaluated after pre-training.
  config.evals.linear_probe = _engine.evaluator(
      "validation", method="linear_probe", batch_size=256,
      options={"train_split": "train", "batch_size": probe_batch,
               "base_learning_rate": probe_lr, "epochs": 90, "num_classes": classes})
  config.evals.knn = _engine.evaluator("validation", method="knn", batch_size=256,
                                       options={"train_split": "train"})


def partimagenet_view(config: ml_collections.ConfigDict) -> None:
  """The evaluation view of the authors' PartImageNet notebooks: shorter side to 224, the
  centre 224^2 (ratio 1), 196 SEEDS superpixels, foreground = any annotated part (used by
  this file's `partimagenet_tta` and cast_deit.py's `partimagenet_figure_ground`). One view
  per run: the run's other centre-view evaluations (k-NN, probe) read it too."""
  config.eval.center_crop, config.eval.center_crop_ratio = 224, 1.0
  config.eval.scale = 1.0
  config.eval.image_size = config.eval.original_size = (224, 224)
  config.eval.num_superpixels = 196
  config.eval.label_field = "object_class"        # any annotated part


def _partimagenet_tta(config: ml_collections.ConfigDict) -> None:
  """Appendix B.1 / Table 10: CAST-B MoCo-trained on IN-1K; a dog vs non-dog prototype
  classifier from PartImageNet train, TENT per validation image, on `partimagenet_view`
  (so the inherited ImageNet probe and k-NN use that ratio-1 view as well)."""
  config.model.size = "cast_base"
  partimagenet_view(config)
  config.evals.tta = _engine.evaluator(
      "val", method="tta", dataset="partimagenet", batch_size=1,
      options={"train_split": "train", "positive_classes": IMAGENET_DOG_CLASSES,
               "num_classes": 2})


def _coco(config: ml_collections.ConfigDict) -> None:
  config.data.name = "coco/2017"                  # TFDS; only `image` is read
  _table11(config, num_images=COCO_TRAIN2017_IMAGES, epochs=400, warmup_epochs=40)
  # VOC 2012 val, at full size (images up to 500^2), 784 SEEDS superpixels as the
  # authors' VOC setting; memory of train_aug (10 582 images), 21 classes, 255 void.
  config.eval.image_size = (504, 504)
  config.eval.original_size = (500, 500)
  config.eval.num_superpixels = 784
  config.eval.label_field = "segmentation"
  config.evals.retrieval = _engine.evaluator(
      "val", method="retrieval", dataset="voc2012_sbd", batch_size=8,
      options={"memory_split": "train_aug", "num_classes": 21})


def tta_evaluator() -> ml_collections.ConfigDict:
  """Test-time adaptation on 8 validation scenes with prototypes of 32 training scenes
  (`tiny_tta`; its compilation, a per-image gradient through the encoder, takes minutes
  on the loaded CPU, so the default `tiny` run leaves it out)."""
  return _engine.evaluator("validation", method="tta", batch_size=4, num_examples=8,
                           options={"train_split": "train", "num_train_examples": 32})


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg == "tiny_tta":
    config = get_config("tiny")
    config.evals.tta = tta_evaluator()
    return config
  config = _base()
  if arg in (None, "tiny"):
    config.data.name = "synthetic_scenes/tiny"
    config.data.batch_size = 8
    config.data.augment.crop_size = 64              # 32^2 scenes enlarged: 8x8 stem cells
    config.data.augment.min_scale = 0.3
    config.model.size = "cast_tiny"
    config.model.moco.dim = 32
    config.model.moco.mlp_dim = 64
    config.model.superpixels.num_superpixels = 36
    config.eval.scale = 2.0
    config.eval.image_size = (64, 64)
    config.eval.original_size = (32, 32)
    config.eval.num_superpixels = 36
    config.eval.segment_fields = ("parts",)       # the finest level of the scenes
    config.eval.colour_scale = 20.0
    config.evals.hierarchy = _engine.evaluator("validation", method="hierarchy",
                                               every_steps=40, batch_size=4, num_examples=8)
    # Same batch size as `hierarchy`: the jitted encoder compiles once for both.
    config.evals.knn = _engine.evaluator("validation", method="knn", batch_size=4,
                                         options={"train_split": "train"})
    # jhseg.tasks.cast_evals: the paper's probe recipe (90 epochs, lr 0.8 x batch / 256)
    # on the 64 training scenes' cached embeddings, batch 16.
    config.evals.linear_probe = _engine.evaluator(
        "validation", method="linear_probe", batch_size=4,
        options={"train_split": "train", "batch_size": 16})
    config.eval.label_field = "object_class"        # the scenes' object classes, 0 = ground
    config.evals.figure_ground = _engine.evaluator("validation", method="figure_ground",
                                                   batch_size=4, num_examples=8)
    config.evals.retrieval = _engine.evaluator(
        "validation", method="retrieval", batch_size=4,
        options={"memory_split": "train", "num_memory_examples": 32, "num_classes": 5})
    config.num_train_steps = 40
    config.log_every_steps = 10
    config.checkpoint_every_steps = 40
    config.optim.learning_rate = 1e-3             # CPU-minutes run, not the paper's
    config.optim.warmup_steps = 4
  elif arg == "bsds500":
    config.data.name = "bsds500"
    config.data.train_split = "train+val"
    config.data.batch_size = 16
    config.model.size = "cast_small"
    config.model.dim = 96
    config.model.num_heads = 4
    config.model.depths = (1, 1, 1, 1)
    config.model.moco.mlp_dim = 1024
    config.eval.scale = 0.5                       # 481x321 -> 240x160
    config.eval.image_size = (248, 248)           # both orientations
    config.eval.original_size = (481, 481)
    config.eval.num_superpixels = 98              # ~ the training density of SEEDS
    config.eval.max_truths = 9
    config.evals.test = _engine.evaluator("test", method="hierarchy", batch_size=2)
    config.num_train_steps = 150
    config.log_every_steps = 10
    config.checkpoint_every_steps = 150
    config.optim.learning_rate = 1e-3             # short CPU budget; the paper's is below
    config.optim.warmup_steps = 15
  elif arg == "paper":
    config.data.name = "bsds500"
    config.data.train_split = "train+val"
    config.data.batch_size = 256
    config.eval.scale = 1.0
    config.eval.image_size = (488, 488)
    config.eval.original_size = (481, 481)
    config.eval.num_superpixels = 600             # 196 per 224^2, at 481x321
    config.eval.max_truths = 9
    config.evals.test = _engine.evaluator("test", method="hierarchy", batch_size=8)
    steps_per_epoch = 300 // 256 + 1
    config.num_train_steps = 200 * steps_per_epoch
    config.optim.learning_rate = _moco_learning_rate(256)
    config.optim.warmup_steps = 20 * steps_per_epoch
    config.checkpoint_every_steps = 50
  elif arg == "imagenet":
    _imagenet(config)
  elif arg == "partimagenet_tta":
    _imagenet(config)
    _partimagenet_tta(config)
  elif arg == "imagenet100":
    _imagenet(config, classes=100)
  elif arg == "coco":
    _coco(config)
  else:
    raise ValueError(f"unknown config variant {arg!r}; valid: None, 'tiny', 'tiny_tta', "
                     f"'bsds500', 'paper', 'imagenet', 'imagenet100', 'coco', 'partimagenet_tta'")
  return config
