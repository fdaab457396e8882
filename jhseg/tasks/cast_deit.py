"""CAST trained supervised with DeiT's recipe (Ke, Mo, Yu, ICLR 2024; task `cast_deit`).

Training (paper section 4 and appendix E.4 Table 12; the authors' `deit/main_suppix.py`,
`deit/datasets_seeds.py` and `engine_suppix.py`, read for the defaults):

  per image, on the host (`make_train_transform`):
    random resized crop to 224^2 (area [0.08, 1], aspect [3/4, 4/3], bicubic),
    horizontal flip p 0.5, RandAugment rand-m9-mstd0.5-inc1 (`jhseg.data.randaugment`),
    ImageNet normalisation, random erasing p 0.25 (per-pixel noise),
    then SEEDS superpixels of that augmented view (196 at 224^2; the authors' DeiT
    settings: histogram bins 5, 15 iterations) computed on the de-normalised view, as the
    authors do after their whole transform; fixed count, padded with a mask.
  per batch, inside the jitted step (`jhseg.data.mixing.mix_batch`, key from `ctx.rng`):
    mixup alpha 0.8 / cutmix alpha 1.0 (switch p 0.5, mix p 1), label smoothing 0.1.
  loss: soft-target cross-entropy of the class-token logits
    (`jhseg.losses.classification`; the head is a Linear on LayerNorm(class token)).
  AdamW (b 0.9 / 0.999, eps 1e-8), lr 5e-4 x batch / 512, weight decay 0.05 on weights only
    (biases, normalisation scales and the class token are exempt, as timm's
    `create_optimizer`), 5 warm-up epochs then cosine to 1e-5, 300 epochs, drop path 0.1.

What is trained: every parameter of the classifier except the last pooling's fc1 / fc2 /
centroid_fc, which the authors freeze (`cast.frozen_by_authors_paths`).

Model EMA (`config.model.ema_decay`, 0 = off; the authors' `main_suppix.py` keeps timm's
`ModelEma` on by default with decay 0.99996): `Classifier.ema_encoder`, a copy of the
encoder made at initialisation, outside the gradient (`trainable()` leaves it out), updated
in `after_update` once per optimizer update as timm's ModelEma:
  ema <- d * ema + (1 - d) * theta     for every parameter and BatchNorm statistic
(`update_ema`). It is part of the run state, so checkpoints keep it. The authors evaluate
and report the model itself (`evaluate(data_loader_val, model, ...)`), which is the default
here too; `config.eval.use_ema = True` runs every evaluation on the EMA encoder instead
(`EMAWeights`).

The model is `Classifier` (the CAST encoder with a linear head at `encoder/head`), so a
checkpoint's encoder sits under `encoder/` exactly as in the MoCo task's `MoCoCAST`: the
MoCo task's evaluations run on it unchanged (they call `model.encoder`), and VOC
fine-tuning (`jhseg.tasks.cast_seg`) loads either with `init_from` prefixes
{"encoder/": "encoder/"}.

Evaluations (`config.evals.<name>.method`):
  classification  top-1 / top-5 accuracy and cross-entropy of the logits on the DeiT
                  evaluation view: shorter side resized to crop / 0.875 (bicubic), centre
                  crop, SEEDS, normalisation (the authors' `build_transform(False)`).
  and every evaluation of the MoCo task (`jhseg.tasks.cast.CASTMoCo.evaluations`:
  hierarchy, knn, figure_ground, ...) on the encoder, with its `config.eval.center_crop`
  views (`CASTMoCo.center_crop_transforms`: e.g. the authors' PartImageNet view).

Faithfulness (deviations and their reasons):
  * mixup / cutmix mix the images only; the superpixels (and so the tokens' grouping) stay
    those of each unmixed view, as in the authors' code (their superpixels come from the
    dataset, mixing happens afterwards in the training loop). A cutmix box therefore
    carries the other image's pixels inside this image's superpixels.
  * none for the position embedding: as the authors' DeiT variant, the configs select
    `model.position_embedding = "learned"` (a (1, 1 + G*G, D) table, N(0, 0.02^2), G =
    crop / 8, its row 0 added to the class token, its grid averaged per superpixel; no
    weight decay, as timm's `no_weight_decay`). At other image sizes (e.g. the hierarchy
    evaluation) the grid part is resized bicubically (`jhseg.models.cast`), where the
    authors' classification model would fail. The MoCo task keeps the fixed sin-cos
    embedding, so its checkpoints and the DeiT ones differ by the `pos_embed` parameter.
  * repeated augmentation (DeiT's RASampler, 3 copies of each drawn image, on by default in
    the authors' script) is the engine's `config.data.repeated_augmentation` (3 in the
    `imagenet` variants); its deviations from RASampler are listed in
    `jhseg.data.repeated_augmentation`. The last partial batch is not dropped; float32
    throughout (no AMP).
  * the warm-up is per step from 0 (timm: per epoch from 1e-6), the cosine per step and
    the 10 cool-down epochs are not run (DeiT's loop stops at `epochs` too).
  * the random resized crop's box follows torchvision (`cast.random_resized_box`); the
    resizes use OpenCV's bicubic on uint8 instead of PIL's (antialiasing when shrinking).
  * random erasing runs after normalisation as timm's; the erased noise is clipped to
    [0, 1] after de-normalising for SEEDS (the authors' uint8 cast wraps instead).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jhseg.data import mixing
from jhseg.data import options as options_lib
from jhseg.data import randaugment
from jhseg.data.transforms import random_transform
from jhseg.losses import classification
from jhseg.models import cast as cast_lib
from jhseg.superpixels import seeds
from jhseg.tasks import cast as cast_task
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Evaluation, Example, StepContext

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

EVAL_CROP_RATIO = 0.875  # DeiT's --eval-crop-ratio: 224 / 256
DEIT_SEEDS_BINS = 5      # deit/datasets_seeds.py (MoCo's uses 15)
DEIT_SEEDS_ITERATIONS = 15


@dataclasses.dataclass(frozen=True)
class DeiTAugmentOptions:
  """DeiT's training view (`config.data.augment`); defaults are the authors'."""
  crop_size: int = 224
  min_scale: float = 0.08
  max_scale: float = 1.0
  min_ratio: float = 3.0 / 4.0
  max_ratio: float = 4.0 / 3.0
  flip_probability: float = 0.5
  rand_augment: bool = True
  num_ops: int = 2
  magnitude: float = 9.0
  magnitude_std: float = 0.5
  erase_probability: float = 0.25

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None,
                  where: str = "config.data.augment") -> "DeiTAugmentOptions":
    return options_lib.options_from_config(cls, config, where=where)


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 (H, W, 3) -> (height, width, 3), OpenCV bicubic (DeiT's interpolation)."""
  import cv2  # pylint: disable=g-import-not-at-top  (optional heavy import)
  if image.shape[:2] == (height, width):
    return image
  return cv2.resize(np.ascontiguousarray(image), (width, height),
                    interpolation=cv2.INTER_CUBIC)


def decode_labelled(example: Mapping[str, Any]) -> Example:
  """uint8 image and int32 `label`, with errors naming the missing or malformed field."""
  for field in ("image", "label"):
    if field not in example:
      raise ValueError(f"cast_deit task: dataset example has no field {field!r} (has "
                       f"{sorted(example)}); DeiT training needs an image-level class")
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"cast_deit task: field 'image' must be uint8 (H, W, 3); got "
                     f"{image.dtype} {image.shape}")
  return {"image": image, "label": np.asarray(example["label"], np.int32)}


def with_superpixels(normalised: np.ndarray, seeds_options: seeds.SeedsOptions) -> Example:
  """image, superpixels and segment_mask of a normalised view: SEEDS on the de-normalised,
  clipped view (the authors compute theirs after the whole transform)."""
  view = np.clip(normalised * cast_task.IMAGENET_STD + cast_task.IMAGENET_MEAN, 0.0, 1.0)
  superpixels, mask = seeds.seeds_superpixels(view, seeds_options)
  return {"image": normalised.astype(np.float32), "superpixels": superpixels,
          "segment_mask": mask}


def augment_image(image: np.ndarray, rng: np.random.Generator,
                  options: DeiTAugmentOptions) -> np.ndarray:
  """uint8 image -> normalised float32 (S, S, 3) DeiT training view (module docstring)."""
  top, left, h, w = cast_task.random_resized_box(
      rng, *image.shape[:2], scale=(options.min_scale, options.max_scale),
      ratio=(options.min_ratio, options.max_ratio))
  size = options.crop_size
  view = resize_bicubic(image[top:top + h, left:left + w], size, size)
  if rng.random() < options.flip_probability:
    view = view[:, ::-1]
  if options.rand_augment:
    view = randaugment.rand_augment(
        np.ascontiguousarray(view), rng,
        randaugment.RandAugmentOptions(num_ops=options.num_ops, magnitude=options.magnitude,
                                       magnitude_std=options.magnitude_std))
  normalised = cast_task.normalize(view.astype(np.float32) / 255.0)
  return randaugment.random_erase(
      normalised, rng, randaugment.ErasingOptions(probability=options.erase_probability))


def make_train_transform(options: DeiTAugmentOptions, seeds_options: seeds.SeedsOptions):
  """Random transform: {image uint8, label} -> image (S, S, 3) normalised, superpixels
  (S, S) int32, segment_mask (N,) bool, label."""

  @random_transform
  def deit_view(example: Example, rng: np.random.Generator) -> Example:
    out = with_superpixels(augment_image(example["image"], rng, options), seeds_options)
    out["label"] = example["label"]
    return out

  return deit_view


def center_view(image: np.ndarray, crop_size: int, *,
                crop_ratio: float = EVAL_CROP_RATIO) -> np.ndarray:
  """DeiT's evaluation view: shorter side to int(crop / ratio) (bicubic), centre crop."""
  height, width = image.shape[:2]
  short = int(crop_size / crop_ratio)
  if height <= width:
    new_h, new_w = short, max(crop_size, int(round(width * short / height)))
  else:
    new_h, new_w = max(crop_size, int(round(height * short / width))), short
  resized = resize_bicubic(image, new_h, new_w)
  top, left = (new_h - crop_size) // 2, (new_w - crop_size) // 2
  return resized[top:top + crop_size, left:left + crop_size]


EMA_ENCODER = "ema_encoder"


def _own_copy(module: nnx.Module) -> nnx.Module:
  """A deep copy holding its own buffers (a clone shares the arrays, which the engine's
  donated train step refuses to receive twice)."""
  copy = nnx.clone(module)
  nnx.update(copy, jax.tree.map(lambda x: jnp.array(x, copy=True), nnx.state(copy)))
  return copy


class Classifier(nnx.Module):
  """The CAST encoder with DeiT's linear head (`encoder.head`); `model.encoder` as in
  `jhseg.models.cast_moco.MoCoCAST`. With `ema`, also `ema_encoder`, the encoder's
  exponential moving average (module docstring), else `ema_encoder` is None."""

  def __init__(self, config: cast_lib.CASTConfig, *, num_classes: int,
               drop_path_rate: float = 0.0, ema: bool = False, rngs: nnx.Rngs):
    self.encoder = cast_lib.CAST(config, num_classes=num_classes,
                                 drop_path_rate=drop_path_rate, rngs=rngs)
    # timm's ModelEma deep-copies the model once it is initialised.
    self.ema_encoder = _own_copy(self.encoder) if ema else None

  def __call__(self, images, superpixels, segment_mask) -> cast_lib.CASTOutput:
    return self.encoder(images, superpixels, segment_mask)


class EMAWeights(nnx.Module):
  """What the evaluations see with `config.eval.use_ema`: `encoder` is the classifier's
  EMA copy (shared, not copied), so `model.encoder` reads the averaged weights."""

  def __init__(self, classifier: Classifier):
    if classifier.ema_encoder is None:
      raise ValueError("cast_deit task: config.eval.use_ema=True needs the model EMA; set "
                       "config.model.ema_decay in (0, 1) (the authors use 0.99996)")
    self.encoder = classifier.ema_encoder


def is_ema_copy(path, value=None) -> bool:
  """nnx filter: the variables of the EMA copy (never trained)."""
  del value
  return bool(path) and path[0] == EMA_ENCODER


_AVERAGED = nnx.Any(nnx.Param, nnx.BatchStat)  # timm averages every float state_dict entry


def update_ema(model: Classifier, decay: float | jax.Array) -> None:
  """ema <- decay * ema + (1 - decay) * theta over parameters and BatchNorm statistics
  (timm's ModelEma.update)."""
  averaged = jax.tree.map(lambda e, t: decay * e + (1.0 - decay) * t,
                          nnx.state(model.ema_encoder, _AVERAGED),
                          nnx.state(model.encoder, _AVERAGED))
  nnx.update(model.ema_encoder, averaged)


def ema_decay_of(model_config: Mapping[str, Any]) -> float:
  """`config.model.ema_decay` (absent or 0: no EMA), checked to be in [0, 1)."""
  decay = float(model_config.get("ema_decay") or 0.0)
  if not 0.0 <= decay < 1.0:
    raise ValueError(f"config.model.ema_decay={decay!r}: expected 0 (no model EMA) or a "
                     f"decay in (0, 1), e.g. the authors' 0.99996")
  return decay


def mix_options(loss_config: Mapping[str, Any] | None) -> mixing.MixOptions:
  """`config.loss.mixing` as MixOptions (absent fields: DeiT's values)."""
  return options_lib.options_from_config(mixing.MixOptions, (loss_config or {}).get("mixing"),
                                     where="config.loss.mixing")


class CASTDeiT(cast_task.CASTMoCo):
  """CAST classifier trained with DeiT's recipe (module docstring). Inherits the MoCo task's
  data helpers and evaluations; replaces model, trainable set, transforms and loss."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.num_classes = int(config.model.num_classes)
    self.mix = mix_options(config.get("loss"))
    self.ema_decay = ema_decay_of(config.model)
    self.evaluate_ema = bool(config.get("eval", {}).get("use_ema", False))
    if self.evaluate_ema and not self.ema_decay:
      raise ValueError("cast_deit task: config.eval.use_ema=True but config.model.ema_decay "
                       "is 0 (no model EMA); set a decay in (0, 1), e.g. 0.99996")
    self._classify = None

  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    return Classifier(self.cast_config, num_classes=self.num_classes,
                      drop_path_rate=float(self.config.model.get("drop_path_rate", 0.0)),
                      ema=bool(self.ema_decay), rngs=rngs)

  def trainable(self) -> Any:
    frozen = cast_lib.frozen_by_authors_paths(len(self.cast_config.num_clusters),
                                              prefix=("encoder",))
    return nnx.All(nnx.Param, nnx.Not(is_ema_copy), nnx.Not(frozen))

  def after_update(self, model, ctx: StepContext) -> None:
    del ctx
    if self.ema_decay:  # traced once: without EMA the step does nothing here
      update_ema(model, self.ema_decay)

  def _seeds(self, num_superpixels: int) -> seeds.SeedsOptions:
    s = self.config.model.superpixels
    return seeds.SeedsOptions(num_superpixels=int(num_superpixels),
                              num_iterations=int(s.num_iterations),
                              histogram_bins=int(s.get("histogram_bins", DEIT_SEEDS_BINS)))

  def train_transforms(self):
    options = DeiTAugmentOptions.from_config(self.config.data.get("augment"))
    num = int(self.config.model.superpixels.num_superpixels)
    return [decode_labelled, make_train_transform(options, self._seeds(num))]

  def classification_transforms(self):
    crop = int(self.config.data.augment.crop_size)
    ratio = float(self.config.eval.get("crop_ratio", EVAL_CROP_RATIO))
    options = self._seeds(int(self.config.model.superpixels.num_superpixels))

    def evaluation_view(example):
      decoded = decode_labelled(example)
      view = center_view(decoded["image"], crop, crop_ratio=ratio)
      out = with_superpixels(cast_task.normalize(view.astype(np.float32) / 255.0), options)
      out["label"] = decoded["label"]
      return out

    return [evaluation_view]

  # --- training
  def loss(self, model, batch: Batch, ctx: StepContext):
    images, targets, lam = mixing.mix_batch(
        jax.random.fold_in(ctx.rng, 0), batch["image"], batch["label"],
        num_classes=self.num_classes, options=self.mix)
    logits = model(images, batch["superpixels"], batch["segment_mask"]).logits
    loss = classification.soft_target_cross_entropy(logits, targets)
    # Agreement with the dominant label (the unmixed one when lam >= 0.5).
    dominant = jnp.where(lam >= 0.5, batch["label"], batch["label"][::-1])
    top1 = jnp.mean(classification.top_k_correct(logits, dominant, 1).astype(jnp.float32))
    return loss, {"top1_dominant": top1, "mix_lambda": lam}

  # --- evaluation
  def evaluations(self) -> Mapping[str, Evaluation]:
    table = {**super().evaluations(),
             "classification": Evaluation(self.evaluate_classification,
                                          self.classification_transforms)}
    if not self.evaluate_ema:
      return table
    return {name: Evaluation(self._on_ema(e.run), e.transforms) for name, e in table.items()}

  @staticmethod
  def _on_ema(run):
    """`run` on the EMA encoder (`config.eval.use_ema`)."""
    return lambda model, ctx: run(EMAWeights(model), ctx)

  def _logits(self, model, images, superpixels, mask) -> jax.Array:
    """Class logits through the MoCo task's jitted encoder forward (one compiled program
    for the classification, hierarchy and k-NN evaluations at one batch size) and the head."""
    if self._classify is None:
      self._classify = nnx.jit(lambda model, embedding: model.encoder.head(embedding))
    embedding, _ = self._encoder_outputs()(model, images, superpixels, mask)
    return self._classify(model, embedding)

  def evaluate_classification(self, model, ctx: "EvalContext") -> dict[str, Any]:
    top1 = top5 = loss = count = 0.0
    k = min(5, self.num_classes)
    for batch in ctx.batches():
      logits = self._logits(model, batch["image"], batch["superpixels"], batch["segment_mask"])
      mask = batch["example_mask"]
      targets = jax.nn.one_hot(batch["label"], self.num_classes)
      per_batch = outputs.to_host({
          "top1": jnp.sum(classification.top_k_correct(logits, batch["label"], 1) & mask),
          "top5": jnp.sum(classification.top_k_correct(logits, batch["label"], k) & mask),
          "loss": classification.soft_target_cross_entropy(logits, targets, where=mask)
                  * jnp.sum(mask),
          "count": jnp.sum(mask)})
      top1 += float(per_batch["top1"])
      top5 += float(per_batch["top5"])
      loss += float(per_batch["loss"])
      count += float(per_batch["count"])
    if not count:
      raise ValueError(f"cast_deit task: evaluator {ctx.name!r} gave no example")
    scalars = {"top1": top1 / count, f"top{k}": top5 / count, "loss": loss / count,
               "num_examples": count}
    if jax.process_index() == 0:
      outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars})
    return scalars
