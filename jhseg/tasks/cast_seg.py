"""CAST fine-tuned for semantic segmentation on VOC (Ke, Mo, Yu, ICLR 2024; task `cast_seg`).

The transfer-learning protocol of appendix E.5 ("Semantic segmentation: transfer
learning", after Van Gansbeke et al. 2021; Fig. 12 and the authors' SPML
`finetune_cast.sh`, `cast_models/cast_seg.py`, `softmax_classifier.py`, read for the
details): a CAST encoder pre-trained by MoCo (`jhseg.tasks.cast`) or DeiT
(`jhseg.tasks.cast_deit`) gets

  hypercolumn fusion (the authors' `BlockFusion`): the level tokens Z_1 (superpixels),
    Z_2 .. Z_4 (64 / 32 / 16 regions, each after its level's blocks) are unpooled to the
    superpixels by the chained argmax of the pooling logits (S_l = S_0 P_1 .. P_l),
    concatenated (4D) and projected: BatchNorm - Dropout 0.2 - Linear(4D -> D);
  the 2-layer 1x1 convolution head (the authors' `SoftmaxClassifier`):
    Linear(D -> D, no bias) - BatchNorm - ReLU - Linear(D -> K);
  per-pixel logits = the logits of the pixel's superpixel (the authors gather token
    features to pixels, then apply the 1x1 convolutions: the same per-pixel values).

Loss: softmax cross-entropy over the labelled pixels (255 void ignored), computed per
superpixel from the class histogram of its pixels (sum_{s,k} n_sk (lse(z_s) - z_sk) / sum n,
equal to the per-pixel mean without a (B, H, W, K) tensor). SGD momentum 0.9, lr 3e-3,
weight decay 1e-4 (weights only), poly 0.9, 30k steps, batch 16, 512^2 crops (random
flip, random scale [0.5, 1.5], random crop padded with the mean colour and void), 784
SEEDS superpixels per crop (histogram bins 5, 15 iterations, as SPML's dataset).

Initialisation: `config.init_from` = {"workdir": RUN, "prefixes": {"encoder/": "encoder/"}}
loads the encoder of a MoCo (`MoCoCAST.encoder`) or DeiT (`cast_deit.Classifier.encoder`)
run; the DeiT classifier head and the MoCo heads are not used, fusion and head keep
their initialisation. The encoder's position embedding follows the source run
(`source_position_embedding`): its `config.json` (`model.position_embedding` /
`position_grid`: MoCo's fixed sin-cos, DeiT's learned G x G table), or, for a checkpoint
folder without one, the shape of its `pos_embed`. Fields left unset (None) take the
source's values, written into `config.model` (so this run's config.json records them); a
value set that differs fails, naming the field and the source's value.

Evaluation `miou` (single scale, as the paper): the image padded to `eval.image_size`
with the mean colour, SEEDS on the padded image (the authors' `resize_with_pad`), the
superpixel argmax mapped to pixels, the confusion matrix over the original pixels
(`jhseg.metrics.semantic`): mIoU, pixel accuracy, per-class IoU.

Faithfulness (deviations and their reasons):
  * superpixel labels are resized to the stem grid (stride 8) for the segment means, as
    in pre-training (`jhseg.models.cast`); the authors' fine-tuning model instead
    upsamples the stem features bilinearly to the image. A superpixel covering no stem
    cell becomes a masked token (its pixels still get the logits of its slot).
  * the fusion and head BatchNorms normalise over the valid superpixel tokens (one
    sample per superpixel) instead of over pixels (authors: per pixel for the head, per
    token, class token included, for the fusion); the class token is not fused (it
    plays no part in the per-pixel output).
  * no warm-up (the script's 100 iterations) and no bias learning-rate doubling.
  * the fusion and head use flax's default initialisation.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jhseg.data import options as options_lib
from jhseg.data.transforms import random_transform
from jhseg.metrics import semantic
from jhseg.models import cast as cast_lib
from jhseg.superpixels import seeds
from jhseg.tasks import cast as cast_task
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Example, StepContext, Task
from jhseg.train import checkpointing, run_config

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

IGNORE = 255
SEG_SEEDS_BINS = 5        # SPML's spix_seeds_base_dataset.py
SEG_SEEDS_ITERATIONS = 15


# ----------------------------------------------------------------------------- model


def unpool_labels(level_logits: Sequence[jax.Array]) -> list[jax.Array]:
  """Region of every superpixel at levels 2..L: the chained argmax of the pooling logits.

  level_logits[l]: (B, N_l, N_{l+1}) logits of pooling l+1 (N_1 = superpixels). Returns
  [(B, N_1) region index at level 2, ..., at level len(level_logits) + 1].
  """
  labels, current = [], None
  for logits in level_logits:
    step = jnp.argmax(logits, axis=-1)
    current = step if current is None else jnp.take_along_axis(step, current, axis=1)
    labels.append(current)
  return labels


class Segmenter(nnx.Module):
  """CAST encoder + hypercolumn fusion + 2-layer 1x1 head (module docstring)."""

  def __init__(self, config: cast_lib.CASTConfig, *, num_classes: int,
               drop_path_rate: float = 0.0, fusion_dropout: float = 0.2, rngs: nnx.Rngs):
    dim, levels = config.dim, len(config.num_clusters)
    self.encoder = cast_lib.CAST(config, drop_path_rate=drop_path_rate, rngs=rngs)
    self.fusion_norm = nnx.BatchNorm(levels * dim, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.fusion_dropout = nnx.Dropout(fusion_dropout, rngs=rngs)
    self.fusion = nnx.Linear(levels * dim, dim, rngs=rngs)
    self.head_hidden = nnx.Linear(dim, dim, use_bias=False, rngs=rngs)
    self.head_norm = nnx.BatchNorm(dim, momentum=0.9, epsilon=1e-5, rngs=rngs)
    self.head_out = nnx.Linear(dim, num_classes, rngs=rngs)

  def token_logits(self, images, superpixels, segment_mask) -> jax.Array:
    """(B, S, K) logits of each superpixel slot."""
    out = self.encoder(images, superpixels, segment_mask)
    tokens = [out.levels[0].tokens]
    regions = unpool_labels([level.logits for level in out.levels[:-1]])
    for level, region in zip(out.levels[1:], regions):
      tokens.append(jnp.take_along_axis(level.tokens, region[..., None], axis=1))
    mask = out.levels[0].mask[..., None]
    x = jnp.concatenate(tokens, axis=-1)
    x = self.fusion(self.fusion_dropout(self.fusion_norm(x, mask=mask)))
    x = jax.nn.relu(self.head_norm(self.head_hidden(x), mask=mask))
    return self.head_out(x)

  def __call__(self, images, superpixels, segment_mask) -> jax.Array:
    """(B, H, W, K) per-pixel logits (pixels with superpixel -1 get slot 0's)."""
    logits = self.token_logits(images, superpixels, segment_mask)
    b, h, w = superpixels.shape
    index = jnp.maximum(superpixels, 0).reshape(b, h * w, 1)
    return jnp.take_along_axis(logits, index, axis=1).reshape(b, h, w, -1)


def superpixel_cross_entropy(token_logits: jax.Array, superpixels: jax.Array,
                             labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean per-pixel softmax cross-entropy and accuracy when each pixel takes its
  superpixel's logits, from per-superpixel class counts n_sk:

    L = sum_{b,s,k} n_bsk (logsumexp(z_bs) - z_bsk) / sum n

  token_logits (B, S, K); superpixels (B, H, W) in [0, S) (others ignored); labels
  (B, H, W), pixels outside [0, K) ignored (void 255, padding).
  """
  b, s, k = token_logits.shape
  valid = (labels >= 0) & (labels < k) & (superpixels >= 0) & (superpixels < s)
  flat = jnp.where(valid, superpixels * k + labels, s * k).reshape(b, -1)
  counts = jax.vmap(lambda f: jnp.bincount(f, length=s * k + 1))(flat)[:, :-1]
  counts = counts.reshape(b, s, k).astype(jnp.float32)
  log_probs = jax.nn.log_softmax(token_logits.astype(jnp.float32), axis=-1)
  total = jnp.maximum(jnp.sum(counts), 1.0)
  loss = -jnp.sum(counts * log_probs) / total
  predicted = jax.nn.one_hot(jnp.argmax(token_logits, axis=-1), k, dtype=jnp.float32)
  accuracy = jnp.sum(counts * predicted) / total
  return loss, accuracy


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class CropOptions:
  """SPML's training crop (`config.data.augment`); defaults are the authors'."""
  crop_size: int = 512
  min_scale: float = 0.5
  max_scale: float = 1.5
  flip_probability: float = 0.5

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None,
                  where: str = "config.data.augment") -> "CropOptions":
    return options_lib.options_from_config(cls, config, where=where)


def decode_segmentation(example: Mapping[str, Any], field: str) -> Example:
  """float image in [0, 1] and int32 (H, W) class map from `field`."""
  image = cast_task.decode_image(example)["image"]
  if field not in example:
    raise ValueError(f"cast_seg task: the example has no field {field!r} (config.model."
                     f"label_field); its fields: {sorted(example)}")
  labels = np.asarray(example[field]).astype(np.int32)
  if labels.ndim == 3:
    labels = labels[..., 0]
  if labels.shape != image.shape[:2]:
    raise ValueError(f"cast_seg task: field {field!r} has shape {labels.shape}, the image "
                     f"{image.shape[:2]}")
  return {"image": image, "labels": labels}


def pad_with_mean(image: np.ndarray, labels: np.ndarray, height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Pads (bottom, right) to (height, width): the image with the ImageNet mean colour, the
  labels with void (SPML's `random_crop_with_pad` / `resize_with_pad`)."""
  h, w = labels.shape
  pad = ((0, max(height - h, 0)), (0, max(width - w, 0)))
  padded = np.stack([np.pad(image[..., c], pad, constant_values=cast_task.IMAGENET_MEAN[c])
                     for c in range(3)], axis=-1)
  return padded, np.pad(labels, pad, constant_values=IGNORE)


def with_superpixels(image: np.ndarray, labels: np.ndarray,
                     seeds_options: seeds.SeedsOptions) -> Example:
  superpixels, mask = seeds.seeds_superpixels(image, seeds_options)
  return {"image": cast_task.normalize(image), "superpixels": superpixels,
          "segment_mask": mask, "labels": labels.astype(np.int32)}


def make_train_transform(options: CropOptions, seeds_options: seeds.SeedsOptions):
  """Random transform: mirror, scale, crop with padding, SEEDS on the crop."""
  import cv2  # pylint: disable=g-import-not-at-top  (optional heavy import)

  @random_transform
  def crop_view(example: Example, rng: np.random.Generator) -> Example:
    image, labels = example["image"], example["labels"]
    if rng.random() < options.flip_probability:
      image, labels = image[:, ::-1], labels[:, ::-1]
    scale = rng.uniform(options.min_scale, options.max_scale)
    h, w = labels.shape
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    image = np.clip(cv2.resize(np.ascontiguousarray(image), (nw, nh),
                               interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    labels = cv2.resize(np.ascontiguousarray(labels), (nw, nh),
                        interpolation=cv2.INTER_NEAREST)
    size = options.crop_size
    image, labels = pad_with_mean(image, labels, size, size)
    top = int(rng.integers(0, labels.shape[0] - size + 1))
    left = int(rng.integers(0, labels.shape[1] - size + 1))
    image = np.ascontiguousarray(image[top:top + size, left:left + size], np.float32)
    labels = np.ascontiguousarray(labels[top:top + size, left:left + size])
    return with_superpixels(image, labels, seeds_options)

  return crop_view


def make_eval_transform(image_size: Sequence[int], seeds_options: seeds.SeedsOptions,
                        label_field: str):
  height, width = (int(s) for s in image_size)

  def padded_view(example: Mapping[str, Any]) -> Example:
    decoded = decode_segmentation(example, label_field)
    h, w = decoded["labels"].shape
    if h > height or w > width:
      raise ValueError(f"cast_seg task: an image of {h}x{w} does not fit config.eval."
                       f"image_size={tuple(image_size)}; raise it")
    image, labels = pad_with_mean(decoded["image"], decoded["labels"], height, width)
    return with_superpixels(image.astype(np.float32), labels, seeds_options)

  return padded_view


# ----------------------------------------------------------------------------- task


POSITION_FIELDS = ("position_embedding", "position_grid")


def _init_from_parts(init_from: Any) -> tuple[str, str]:
  """(directory, the source's name prefix of this model's `encoder/`) of config.init_from
  (a path, or a mapping with `workdir` and `prefixes` {source: target})."""
  directory, prefixes = checkpointing.init_from_parts(init_from)
  pairs = prefixes.items() if hasattr(prefixes, "items") else (prefixes or ())
  for source, target in pairs:
    if "encoder/".startswith(target):
      return directory, source + "encoder/"[len(target):]
  return directory, "encoder/"


def _source_config_file(directory: str) -> str | None:
  """config.json of the run at `directory` (a workdir or its checkpoints/<step>/state)."""
  path = os.path.abspath(directory)
  for candidate in (path, os.path.dirname(os.path.dirname(os.path.dirname(path)))):
    file = os.path.join(candidate, run_config.CONFIG_FILE)
    if os.path.isfile(file):
      return file
  return None


def _position_from_checkpoint(directory: str, prefix: str) -> tuple[dict[str, Any], str]:
  """The position fields implied by the source checkpoint's `<prefix>pos_embed` shape."""
  path = checkpointing.state_directory(directory,
                                      missing="no run (config.json) or checkpoint folder")
  # The run state is (model, optimizer): the model's variables are under "0/".
  table = checkpointing.state_shapes(path).get("0/" + prefix + "pos_embed")
  where = f"the checkpoint {path} ({prefix}pos_embed)"
  if table is None:
    return {"position_embedding": "sincos"}, where
  cells = int(table[1]) - 1  # row 0: the class token's
  side = int(round(cells ** 0.5))
  if side * side != cells:
    raise ValueError(f"{where}: a table of {cells} grid cells is not a square grid")
  return {"position_embedding": "learned", "position_grid": side}, where


def source_position_embedding(init_from: Any) -> tuple[dict[str, Any], str]:
  """({field: value} of POSITION_FIELDS of the encoder config.init_from loads, where).

  From the source run's config.json (its encoder fields, resolved as `cast_config_of`),
  else from its checkpoint's `pos_embed` shape. `position_grid` only for a learned table.
  """
  directory, prefix = _init_from_parts(init_from)
  file = _source_config_file(directory)
  if file is None:
    return _position_from_checkpoint(directory, prefix)
  with open(file) as f:
    model = json.load(f).get("model")
  if not isinstance(model, dict) or "size" not in model:
    raise ValueError(f"{file}: no 'model' section with a 'size' (not a CAST run's config)")
  source = cast_task.cast_config_of(ml_collections.ConfigDict(model))
  fields = {"position_embedding": source.position_embedding}
  if source.position_embedding == "learned":
    fields["position_grid"] = source.position_grid
  return fields, f"{file} (model.*)"


def _position_unset(model_config: Mapping[str, Any]) -> bool:
  kind = model_config.get("position_embedding")
  return kind is None or kind == "learned" and model_config.get("position_grid") is None


def follow_source_position(model_config: ml_collections.ConfigDict, init_from: Any) -> None:
  """Sets the unset (None) POSITION_FIELDS of `model_config` to the init_from run's, so the
  run's config.json records them (and a resume or `jhseg.infer` needs no source run); a
  set field that differs raises ValueError naming it and the source's value. With every
  field set, a source that is gone (e.g. for inference) is not an error."""
  if not init_from:
    return
  try:
    fields, where = source_position_embedding(init_from)
  except FileNotFoundError:
    if _position_unset(model_config):
      raise
    return
  for name, value in fields.items():
    mine = model_config.get(name)
    if mine is None:
      with model_config.unlocked():
        model_config[name] = value
    elif mine != value:
      raise ValueError(f"config.model.{name}={mine!r}, but the config.init_from run has "
                       f"{value!r} ({where}); set --config.model.{name}={value!r} or leave "
                       f"it unset to follow the source")


class CASTSegmentation(Task):
  """CAST fine-tuned for semantic segmentation (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    follow_source_position(config.model, config.get("init_from"))
    self.cast_config = cast_task.cast_config_of(config.model)
    self.num_classes = int(config.model.num_classes)
    self._predict = None

  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    return Segmenter(self.cast_config, num_classes=self.num_classes,
                     drop_path_rate=float(m.get("drop_path_rate", 0.0)),
                     fusion_dropout=float(m.get("fusion_dropout", 0.2)), rngs=rngs)

  def trainable(self) -> Any:
    frozen = cast_lib.frozen_by_authors_paths(len(self.cast_config.num_clusters),
                                              prefix=("encoder",))
    return nnx.All(nnx.Param, nnx.Not(frozen))

  def _seeds(self, num_superpixels: int) -> seeds.SeedsOptions:
    s = self.config.model.superpixels
    return seeds.SeedsOptions(num_superpixels=int(num_superpixels),
                              num_iterations=int(s.get("num_iterations",
                                                       SEG_SEEDS_ITERATIONS)),
                              histogram_bins=int(s.get("histogram_bins", SEG_SEEDS_BINS)))

  def train_transforms(self):
    field = str(self.config.model.label_field)
    options = CropOptions.from_config(self.config.data.get("augment"))
    seeds_options = self._seeds(self.config.model.superpixels.num_superpixels)
    return [lambda e: decode_segmentation(e, field),
            make_train_transform(options, seeds_options)]

  def eval_transforms(self):
    return [make_eval_transform(self.config.eval.image_size,
                                self._seeds(self.config.eval.num_superpixels),
                                str(self.config.model.label_field))]

  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    logits = model.token_logits(batch["image"], batch["superpixels"], batch["segment_mask"])
    loss, accuracy = superpixel_cross_entropy(logits, batch["superpixels"], batch["labels"])
    return loss, {"pixel_accuracy": accuracy}

  def _predictions(self):
    if self._predict is None:

      @nnx.jit
      def predict(model, images, superpixels, mask):
        logits = model.token_logits(images, superpixels, mask)
        classes = jnp.argmax(logits, axis=-1)
        b, h, w = superpixels.shape
        index = jnp.maximum(superpixels, 0).reshape(b, h * w)
        return jnp.take_along_axis(classes, index, axis=1).reshape(b, h, w)

      self._predict = predict
    return self._predict

  def evaluate(self, model, ctx: "EvalContext") -> dict[str, Any]:
    confusion = semantic.ConfusionMatrix(self.num_classes, ignore_index=IGNORE)
    for batch in ctx.batches():
      predicted = self._predictions()(model, batch["image"], batch["superpixels"],
                                      batch["segment_mask"])
      values = outputs.to_host({"p": predicted, "y": batch["labels"],
                                "m": batch["example_mask"]})
      keep = np.asarray(values["m"], bool)
      confusion.add(values["y"][keep], values["p"][keep].astype(np.int64))
    result = confusion.result()
    scalars = {"miou": float(result["miou"]), "pixel_accuracy": result["pixel_accuracy"]}
    if jax.process_index() == 0:
      outputs.write_summary(ctx.out_dir, {
          "step": ctx.step, "scalars": scalars,
          "iou": [None if np.isnan(v) else float(v) for v in result["iou"]]})
    return scalars
