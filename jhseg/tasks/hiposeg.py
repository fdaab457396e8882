"""HiPoSeg (Lim, Kim, Kim, Cho, "Hierarchical Prototype Learning for Semantic
Segmentation") as a task of the shared training engine.

Network: DeepLabV3+ (`jhseg.models.deeplab`) classifying every pixel into the finest
classes of a label tree (`jhseg.label_tree`: parts under objects). With
`config.loss.hiposeg = True` the training adds the projection head g_phi (eq. 3), the
prototype memories M^H / M^L (eq. 4) and the losses of eqs. 7-13 under the phased
schedule of section 3.2 (`jhseg.losses.hiposeg`), total eq. 14. With
`config.loss.hiposeg = False` the same DeepLabV3+ is trained with the cross-entropy
alone: the paper's baseline, one config switch away, same parameter initialisation of
the segmentation network (it is built first from the same seed).

Zero inference cost: the model's `__call__` is DeepLabV3+ alone
(`jhseg.models.hiposeg_head.HiPoSegNetwork`); evaluation and `python -m jhseg.infer`
never run the head nor read the memories.

State outside the gradient: the memories are `nnx.Variable`s of the model (not
`nnx.Param`, so not trained). The loss adds this micro-batch's class sums (eq. 5) to
pending sums under stop_gradient; `after_update` -- once per optimizer update, also
under `optim.grad_accum_steps` -- applies eq. 15 with the prototypes of the accumulated
batch and clears the sums. The engine checkpoints every variable, so memories and
pending sums survive a resume bit-exactly. The feature-prototype targets of a step
are the memory after this micro-batch's eq.-15 update (`losses.hiposeg.hiposeg_losses`),
computed in the loss and not stored.

Data (per-example NumPy transforms): the finest labels come from
`config.model.label_fields[0]`; coarser levels from their own fields when given (the
object masks of PASCAL-Part also cover object pixels without a part annotation), else
from the tree. Training: optional resize of the long side to
`config.data.augment.base_size`, random scale in `scale_range`, random crop to
`config.data.image_size` (padding with the ignore label), horizontal flip. Evaluation:
long side resized to `config.eval.size` when set, padded to a fixed square.

Evaluation ("default"): mIoU^l at every level of the tree (finest predictions mapped up
the tree, scored against each level's labels; section 4.1), pixel accuracy, per-class
IoU (Tables 7-8) as `per_class_iou_<level>.txt`, a bar chart `per_class_iou.png` and in
`summary.json`, prediction overlays `<k>_prediction.png` (image, then ground truth
and prediction at every level), `embedding_tsne.png` (Fig. 4: a t-SNE of up to
`config.eval.tsne_pixels_per_class` pixels of every finest class, sampled with a fixed
seed from the first `config.eval.tsne_batches` batches, coloured by class) and, for
HiPoSeg, `prototypes.png` (the memories on their first two principal axes) under the
evaluator's `out_dir`.

Logged: the steps where the loss groups switch on (host log at start-up), and per step
`phase`, every HiPoSeg term and its current weight.

Faithfulness (deviations and their reasons):
  * The open choices of section 3 (tau, kappa, lambdas, feature stages, d', sampling,
    which prototypes the repulsion/alignment terms use) are those documented in
    `jhseg.losses.hiposeg` and `jhseg.models.hiposeg_head`, each exposed in
    `config.loss` / `config.model.head`.
  * Memory update under gradient accumulation: once per optimizer update from the
    accumulated batch (the paper has no accumulation; this is what one iteration over
    the large batch would do).
  * The high-level terms take the high labels as pi(finest label); object pixels without
    a part label (PASCAL-Part's ignore) are not used by the HiPoSeg terms nor the
    cross-entropy (the network predicts parts only, as the paper's single classifier).
  * Augmentation (scale 0.5-2, crop, flip) is the usual DeepLabV3+ recipe; the paper does
    not list its augmentation.
  * CPU configurations evaluate at a reduced size (`config.eval.size`, labels resized by
    nearest neighbour); the paper evaluates at full resolution (`eval.size = None`).
  * `embedding_tsne.png` embeds the decoder features (the classifier's input), for the
    baseline and HiPoSeg alike: the paper does not say which features Fig. 4 shows, the
    baseline has no g_phi, and the decoder features are what inference uses. Pixels are
    taken on a grid of at most ~4096 per image (features at stride 4).
  * Trees: synthetic scenes, PASCAL-Part-108, Cityscapes (19 -> 7, the official label
    table's categories) and Mapillary Vistas v2.0 (LogicSeg's published table: 124 -> 17
    -> 7, where the paper counts 16 mid-level and 4 top-level classes; HiPoSeg's high
    level is the mid level, the top level is only evaluated). ADE20K's 150 -> 14 table is
    not shipped (LogicSeg publishes ranges over an unpublished class order; see
    tfds_builders/ade20k): `config.model.label_tree_file` supplies a tree as JSON.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from jhseg import label_tree as label_tree_lib
from jhseg import segments
from jhseg.data.transforms import random_transform
from jhseg.losses import hiposeg as losses
from jhseg.metrics import semantic
from jhseg.models import deeplab, hiposeg_head, torchvision_import
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Example, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext


def _pascal_part_108_tree() -> label_tree_lib.LabelTree:
  from tfds_builders.pascal_part_108 import classes  # pylint: disable=import-outside-toplevel
  return classes.label_tree()


def _cityscapes_tree() -> label_tree_lib.LabelTree:
  from tfds_builders.cityscapes_hier import classes  # pylint: disable=import-outside-toplevel
  return classes.label_tree()


def _mapillary_vistas_tree() -> label_tree_lib.LabelTree:
  from tfds_builders.mapillary_vistas import classes  # pylint: disable=import-outside-toplevel
  return classes.label_tree()


def _ade20k_tree() -> label_tree_lib.LabelTree:
  from tfds_builders.ade20k import classes  # pylint: disable=import-outside-toplevel
  return classes.label_tree()  # raises: the 150 -> 14 table is not shipped


# config.model.label_tree -> the tree of the dataset.
LABEL_TREES: dict[str, Callable[[], label_tree_lib.LabelTree]] = {
    "synthetic_scenes": label_tree_lib.synthetic_scenes_tree,
    "pascal_part_108": _pascal_part_108_tree,
    "cityscapes": _cityscapes_tree,
    "mapillary_vistas": _mapillary_vistas_tree,
    "ade20k": _ade20k_tree,
}


def get_label_tree(name: str) -> label_tree_lib.LabelTree:
  if name not in LABEL_TREES:
    raise ValueError(f"hiposeg: unknown config.model.label_tree {name!r}; valid names: "
                     f"{sorted(LABEL_TREES)}")
  return LABEL_TREES[name]()


def load_label_tree_file(path: str) -> label_tree_lib.LabelTree:
  """A tree from a JSON file in `LabelTree.to_metadata` format (`config.model.label_tree_file`:
  a hierarchy not shipped with jhseg, e.g. ADE20K's 150 -> 14)."""
  with open(path) as f:
    try:
      metadata = json.load(f)
    except json.JSONDecodeError as error:
      raise ValueError(f"{path}: config.model.label_tree_file is not valid JSON: {error}"
                       ) from error
  return label_tree_lib.LabelTree.from_metadata(metadata, source=path)


def tree_from_config(model_config: ml_collections.ConfigDict) -> label_tree_lib.LabelTree:
  """`config.model.label_tree_file` when set, else the named `config.model.label_tree`."""
  path = model_config.get("label_tree_file")
  return load_label_tree_file(path) if path else get_label_tree(model_config.label_tree)


# ----------------------------------------------------------------------------- transforms


def decode(example: Example, *, tree: label_tree_lib.LabelTree,
           label_fields: Sequence[str | None]) -> Example:
  """{"image": float32 (H, W, 3) in [0, 1], "labels": int32 (L, H, W), one map per level}.

  `label_fields[l]` names the level-l field; None (or a missing entry) maps the finest
  labels up the tree. The finest field is required.
  """
  fields = list(label_fields) + [None] * (tree.num_levels - len(label_fields))
  if not fields[0]:
    raise ValueError("hiposeg: config.model.label_fields[0] must name the finest labels")
  for field in [f for f in fields if f] + ["image"]:
    if field not in example:
      raise ValueError(f"hiposeg: the example has no field {field!r} (config.model."
                       f"label_fields={tuple(label_fields)}); its fields: {sorted(example)}")
  finest = np.asarray(example[fields[0]]).astype(np.int32)
  if finest.ndim == 3:  # TFDS (H, W, 1) label images
    finest = finest[..., 0]
  levels = [finest]
  for level, field in enumerate(fields[1:], start=1):
    if field:
      labels = np.asarray(example[field]).astype(np.int32)
      levels.append(labels[..., 0] if labels.ndim == 3 else labels)
    else:
      levels.append(tree.map_labels(finest, level))
  return {"image": np.asarray(example["image"], np.float32) / 255.0,
          "labels": np.stack(levels)}


def _resize_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
  """(L, H, W) -> (L, height, width) by the nearest pixel centre."""
  _, h, w = labels.shape
  rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
  return labels[:, rows][:, :, cols]


def resize(example: Example, height: int, width: int) -> Example:
  """Bilinear image, nearest labels."""
  image = cv2.resize(example["image"], (width, height), interpolation=cv2.INTER_LINEAR)
  return {"image": image, "labels": _resize_labels(example["labels"], height, width)}


def resize_long_side(example: Example, size: int | None) -> Example:
  if not size:
    return example
  h, w = example["labels"].shape[1:]
  scale = size / max(h, w)
  return resize(example, max(1, round(h * scale)), max(1, round(w * scale)))


def pad_to(example: Example, size: Sequence[int], ignore_label: int) -> Example:
  """Pads (bottom, right) to `size`: image with 0, labels with the ignore label."""
  h, w = example["labels"].shape[1:]
  th, tw = (int(s) for s in size)
  if h > th or w > tw:
    raise ValueError(f"hiposeg: an image of {h}x{w} does not fit {th}x{tw} "
                     f"(config.data.image_size / config.eval.size); raise it")
  return {"image": np.pad(example["image"], ((0, th - h), (0, tw - w), (0, 0))),
          "labels": np.pad(example["labels"], ((0, 0), (0, th - h), (0, tw - w)),
                           constant_values=ignore_label)}


def scale_crop_flip(example: Example, rng: np.random.Generator, *, crop: Sequence[int],
                    scale_range: Sequence[float], flip: bool, ignore_label: int) -> Example:
  """Random scale, random crop to `crop` (padded with ignore if smaller), random h-flip."""
  low, high = (float(s) for s in scale_range)
  if (low, high) != (1.0, 1.0):
    h, w = example["labels"].shape[1:]
    scale = rng.uniform(low, high)
    example = resize(example, max(1, round(h * scale)), max(1, round(w * scale)))
  h, w = example["labels"].shape[1:]
  th, tw = (int(s) for s in crop)
  top, left = int(rng.integers(max(h - th, 0) + 1)), int(rng.integers(max(w - tw, 0) + 1))
  example = {"image": example["image"][top:top + th, left:left + tw],
             "labels": example["labels"][:, top:top + th, left:left + tw]}
  if flip and rng.random() < 0.5:
    example = {"image": example["image"][:, ::-1], "labels": example["labels"][:, :, ::-1]}
  example = pad_to(example, crop, ignore_label)
  return {k: np.ascontiguousarray(v) for k, v in example.items()}


# ----------------------------------------------------------------------------- the task


def _cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean softmax cross-entropy over the labelled pixels (ids in [0, K)), and accuracy."""
  num_classes = logits.shape[-1]
  valid = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  per_pixel = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  count = jnp.maximum(valid.sum(), 1)
  correct = (jnp.argmax(logits, -1) == labels) & valid
  return jnp.sum(jnp.where(valid, per_pixel, 0.0)) / count, correct.sum() / count


class HiPoSeg(Task):
  """DeepLabV3+ on the finest labels, plus HiPoSeg's training-only losses (module doc)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.tree = tree_from_config(config.model)
    self.parent = self.tree.fine_to_level(1)
    self.hiposeg = bool(config.loss.hiposeg)
    self._eval_fn = None
    self._embedding_fn = None
    if self.hiposeg:
      self._check_loss_options()

  # --- model
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    segmenter = deeplab.DeepLabV3Plus(
        self.tree.num_classes(0), depth=int(m.depth), output_stride=int(m.output_stride),
        width=int(m.width), aspp_features=int(m.aspp_features),
        low_level_features=int(m.low_level_features),
        decoder_features=int(m.decoder_features), rngs=rngs)
    if m.get("pretrained"):
      torchvision_import.load_torchvision_resnet(segmenter.encoder, m.pretrained)
    if not self.hiposeg:
      return hiposeg_head.HiPoSegNetwork(segmenter)
    head = hiposeg_head.ProjectionHead(hiposeg_head.stage_features(segmenter),
                                       stages=tuple(m.head.stages), dim=int(m.head.dim),
                                       rngs=rngs)
    bank = hiposeg_head.PrototypeBank(self.tree.num_classes(1), self.tree.num_classes(0),
                                      int(m.head.dim))
    return hiposeg_head.HiPoSegNetwork(segmenter, head, bank)

  # --- data
  def _decode(self):
    fields = tuple(self.config.model.label_fields)
    return lambda e: decode(e, tree=self.tree, label_fields=fields)

  def train_transforms(self):
    augment = self.config.data.augment
    crop = tuple(self.config.data.image_size)
    base = augment.get("base_size")
    ignore = self.tree.ignore_label

    @random_transform
    def augment_fn(example, rng):
      return scale_crop_flip(resize_long_side(example, base), rng, crop=crop,
                             scale_range=tuple(augment.scale_range), flip=bool(augment.flip),
                             ignore_label=ignore)

    return [self._decode(), augment_fn]

  def eval_transforms(self):
    size = self.config.eval.get("size")
    pad = (size, size) if size else tuple(self.config.eval.pad_size)
    ignore = self.tree.ignore_label
    return [self._decode(), lambda e: pad_to(resize_long_side(e, size), pad, ignore)]

  # --- training
  def _check_loss_options(self) -> None:
    c = self.config.loss
    losses._check_choice("config.loss.feature_targets", c.feature_targets,  # pylint: disable=protected-access
                         losses.FEATURE_TARGETS)
    losses._check_choice("config.loss.prototype_targets", c.prototype_targets,  # pylint: disable=protected-access
                         losses.PROTOTYPE_TARGETS)
    switches = losses.phase_switch_steps(int(self.config.num_train_steps),
                                         phase_starts=tuple(c.phase_starts))
    if c.staged:
      logging.info("HiPoSeg schedule (section 3.2): cross-entropy only before step %d; "
                   "L_fh and L_hh from step %d; L_fl and L_ll from step %d; L_align from "
                   "step %d (of %d)", switches[0], *switches, self.config.num_train_steps)
    else:
      logging.info("HiPoSeg schedule: joint training, every loss from step 1")

  def _weights(self) -> losses.LossWeights:
    w = self.config.loss.weights
    return losses.LossWeights(**{name: float(w[name]) for name in losses.LossWeights._fields})

  def loss(self, model, batch: Batch, ctx: StepContext):
    labels = batch["labels"][:, 0]
    c = self.config.loss
    if not self.hiposeg:
      logits = model.segmenter(batch["image"])
      ce, accuracy = _cross_entropy(logits, labels)
      return float(c.weights.ce) * ce, {"ce": ce, "accuracy": accuracy}
    features = model.segmenter(batch["image"], return_features=True)
    ce, accuracy = _cross_entropy(features.logits, labels)
    embeddings = model.head(features)
    batch_size, height, width, _ = embeddings.shape
    small = segments.resize_labels_nearest(labels, height, width)
    terms, _ = losses.hiposeg_losses(
        embeddings, small, self.parent, model.prototypes.memory(), ctx.rng,
        num_samples=min(int(c.num_samples), height * width),
        class_balanced=bool(c.class_balanced), feature_targets=c.feature_targets,
        prototype_targets=c.prototype_targets, temperature=float(c.temperature),
        repulsion_temperature=float(c.repulsion_temperature), alpha=float(c.alpha),
        beta=float(c.beta), margin_in=float(c.margin_in), margin_out=float(c.margin_out),
        momentum=float(c.momentum), renormalize=bool(c.renormalize),
        epsilon=float(c.epsilon))
    flat = small.reshape(batch_size, -1)
    in_range = (flat >= 0) & (flat < len(self.parent))
    high = jnp.where(in_range, jnp.asarray(self.parent)[jnp.where(in_range, flat, 0)], -1)
    model.prototypes.accumulate(
        losses.class_sums(embeddings, high, self.tree.num_classes(1)),
        losses.class_sums(embeddings, flat, self.tree.num_classes(0)))
    weights = losses.loss_weights(ctx.step, ctx.total_steps, weights=self._weights(),
                                  phase_starts=tuple(c.phase_starts), staged=bool(c.staged))
    total = losses.total_loss({**terms, "ce": ce}, weights)
    metrics = {"ce": ce, "accuracy": accuracy,
               "phase": losses.training_phase(ctx.step, ctx.total_steps,
                                              phase_starts=tuple(c.phase_starts)),
               **{f"loss_{k}": v for k, v in terms.items()},
               **{f"weight_{k}": getattr(weights, k) for k in losses.LossWeights._fields}}
    return total, metrics

  def after_update(self, model, ctx: StepContext) -> None:
    """Eq. 15 once per optimizer update (module docstring)."""
    del ctx
    if model.prototypes is None:
      return
    c = self.config.loss
    model.prototypes.commit(momentum=float(c.momentum), renormalize=bool(c.renormalize),
                            epsilon=float(c.epsilon))

  # --- evaluation
  def _confusions(self):
    if self._eval_fn is None:
      tables = [jnp.asarray(self.tree.fine_to_level(l)) for l in range(self.tree.num_levels)]
      sizes = [self.tree.num_classes(l) for l in range(self.tree.num_levels)]
      ignore = self.tree.ignore_label

      @nnx.jit
      def fn(model, images, labels, example_mask):
        finest = jnp.argmax(model(images), -1).astype(jnp.int32)
        predictions = jnp.stack([table[finest] for table in tables], axis=1)
        mask = jnp.broadcast_to(example_mask[:, None, None], finest.shape)
        matrices = [semantic.confusion_matrix(labels[:, l], predictions[:, l], num_classes=k,
                                              ignore_index=ignore, mask=mask)
                    for l, k in enumerate(sizes)]
        return matrices, predictions

      self._eval_fn = fn
    return self._eval_fn

  def _embeddings(self):
    """jit: (decoder features, finest labels) on a grid of at most ~4096 pixels per image
    (labels ignore where the example is padding)."""
    if self._embedding_fn is None:
      ignore = self.tree.ignore_label

      @nnx.jit
      def fn(model, images, labels, example_mask):
        features = model.segmenter(images, return_features=True).decoder
        _, height, width, _ = features.shape
        stride = max(1, int(np.ceil(np.sqrt(height * width / 4096))))
        small = segments.resize_labels_nearest(labels, height, width)
        small = jnp.where(example_mask[:, None, None], small, ignore)
        return features[:, ::stride, ::stride], small[:, ::stride, ::stride]

      self._embedding_fn = fn
    return self._embedding_fn

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    """mIoU per level, per-class IoU tables and prediction overlays (module docstring)."""
    num_pictures = int(self.config.eval.num_pictures)
    scores = [semantic.ConfusionMatrix(self.tree.num_classes(l), ignore_index=None)
              for l in range(self.tree.num_levels)]
    pictures = []
    per_class = int(self.config.eval.get("tsne_pixels_per_class") or 0)
    tsne_batches = int(self.config.eval.get("tsne_batches") or 0) if per_class else 0
    pixel_samples = []
    for batch in ctx.batches():
      matrices, predictions = self._confusions()(model, batch["image"], batch["labels"],
                                                 batch["example_mask"])
      for accumulator, matrix in zip(scores, outputs.to_host(matrices)):
        accumulator.add_matrix(matrix)
      if len(pictures) < num_pictures:
        host = outputs.to_host({"image": batch["image"], "labels": batch["labels"],
                                "predictions": predictions, "mask": batch["example_mask"]})
        for i in np.flatnonzero(host["mask"])[:num_pictures - len(pictures)]:
          pictures.append((host["image"][i], host["labels"][i], host["predictions"][i]))
      if len(pixel_samples) < tsne_batches:
        pixel_samples.append(outputs.to_host(self._embeddings()(
            model, batch["image"], batch["labels"][:, 0], batch["example_mask"])))
    results = [accumulator.result() for accumulator in scores]
    scalars: dict[str, float] = {}
    levels = {}
    for name, names, result in zip(self.tree.level_names, self.tree.class_names, results):
      scalars[f"miou_{name}"] = result["miou"]
      scalars[f"pixel_accuracy_{name}"] = result["pixel_accuracy"]
      levels[name] = {"miou": result["miou"], "pixel_accuracy": result["pixel_accuracy"],
                      "per_class_iou": dict(zip(names, result["iou"]))}
    if jax.process_index() == 0:
      self._write(ctx.out_dir, ctx.step, scalars, levels, pictures)
      if model.prototypes is not None:
        save_prototypes_png(os.path.join(ctx.out_dir, "prototypes.png"),
                            outputs.to_host(nnx.state(model.prototypes)), tree=self.tree,
                            title=f"HiPoSeg memories, step {ctx.step} (PCA)")
      if pixel_samples:
        features, labels = sample_pixels_per_class(
            pixel_samples, per_class=per_class, num_classes=self.tree.num_classes(0))
        save_embedding_tsne_png(
            os.path.join(ctx.out_dir, "embedding_tsne.png"), features, labels, tree=self.tree,
            title=f"{'HiPoSeg' if self.hiposeg else 'baseline'}, step {ctx.step}: decoder "
                  f"features, t-SNE")
    return scalars

  def _write(self, out_dir, step, scalars, levels, pictures) -> None:
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    os.makedirs(out_dir, exist_ok=True)
    outputs.write_summary(out_dir, {"step": step, "scalars": scalars, "levels": levels,
                                    "hiposeg": self.hiposeg})
    for name, level in levels.items():
      with open(os.path.join(out_dir, f"per_class_iou_{name}.txt"), "w") as f:
        f.write(per_class_table(name, level["per_class_iou"], level["miou"]))
    save_per_class_iou_png(os.path.join(out_dir, "per_class_iou.png"), levels,
                           title=f"{'HiPoSeg' if self.hiposeg else 'baseline'}, step {step}")
    for k, (image, labels, predictions) in enumerate(pictures):
      matplotlib.image.imsave(os.path.join(out_dir, f"{k}_prediction.png"),
                              prediction_strip(image, labels, predictions,
                                               ignore_label=self.tree.ignore_label))

  # --- inference on single images (`python -m jhseg.infer`)
  def infer(self, model, image: np.ndarray, out_dir: str, name: str) -> dict[str, str]:
    """Writes `<name>_labels.npy` (int32 (L, H, W), finest level first) and one colour
    PNG per level, `<name>_<level>.png`; DeepLabV3+ only (the head is never run)."""
    import matplotlib.image  # pylint: disable=import-outside-toplevel
    logits = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(image, jnp.float32)[None])
    finest = np.asarray(jnp.argmax(logits[0], -1), np.int32)
    labels = np.stack([self.tree.fine_to_level(l)[finest]
                       for l in range(self.tree.num_levels)])
    stem = os.path.join(out_dir, name)
    paths = {"labels": f"{stem}_labels.npy"}
    np.save(paths["labels"], labels)
    for level, level_name in enumerate(self.tree.level_names):
      paths[level_name] = f"{stem}_{level_name}.png"
      matplotlib.image.imsave(paths[level_name],
                              overlay(np.asarray(image, np.float32), labels[level],
                                      ignore_label=self.tree.ignore_label))
    return paths


# ----------------------------------------------------------------------------- outputs


def per_class_table(level: str, per_class: dict[str, float], miou: float) -> str:
  """Aligned text table of the per-class IoU (%), '-' for classes absent and unpredicted."""
  header = f"{level} class"
  width = max(len(n) for n in [header, *per_class]) + 2
  lines = [f"{header:<{width}}IoU (%)"]
  for name, iou in per_class.items():
    lines.append(f"{name:<{width}}{'-' if not np.isfinite(iou) else f'{100 * iou:.2f}':>6}")
  lines.append(f"{'mIoU':<{width}}{100 * miou:6.2f}")
  return "\n".join(lines) + "\n"


def overlay(image: np.ndarray, labels: np.ndarray, *, ignore_label: int) -> np.ndarray:
  """Image blended half and half with a palette colour per class; ignore stays grey."""
  from jhseg.viz import segments as viz_segments  # pylint: disable=import-outside-toplevel
  known = (labels >= 0) & (labels != ignore_label)
  palette = viz_segments.label_palette(int(labels[known].max(initial=0)) + 1)
  colours = palette[np.where(known, labels, 0)]
  grey = np.repeat(image.mean(-1, keepdims=True), 3, -1)
  return np.clip(np.where(known[..., None], 0.5 * image + 0.5 * colours, 0.5 * grey), 0, 1)


def prediction_strip(image, labels, predictions, *, ignore_label: int,
                     min_size: int = 128) -> np.ndarray:
  """image | truth, prediction of level 0 | truth, prediction of level 1 | ...; small
  images enlarged by an integer factor (nearest) to at least `min_size` pixels high."""
  panels = [np.clip(image, 0, 1)]
  for truth, predicted in zip(labels, predictions):
    panels += [overlay(image, truth, ignore_label=ignore_label),
               overlay(image, predicted, ignore_label=ignore_label)]
  strip = np.concatenate(panels, axis=1)
  factor = max(1, -(-min_size // image.shape[0]))
  return np.repeat(np.repeat(strip, factor, 0), factor, 1)


def save_prototypes_png(path: str, bank: Any, *, tree: label_tree_lib.LabelTree,
                        title: str) -> str | None:
  """The memories' high (stars) and low (dots) prototypes projected on their first two
  principal axes, coloured by high-level class (a linear stand-in for the paper's
  t-SNE of Fig. 4). Nothing is written before any class was seen."""
  from jhseg.viz import _canvas  # pylint: disable=import-outside-toplevel
  from jhseg.viz import segments as viz_segments  # pylint: disable=import-outside-toplevel
  value = lambda name: np.asarray(jax.tree.leaves(bank[name])[0])  # Variable or {"value": x}
  high_seen, low_seen = value("high_seen"), value("low_seen")
  if not high_seen.any() and not low_seen.any():
    return None
  high, low = value("high")[high_seen], value("low")[low_seen]
  points = np.concatenate([high, low])
  centred = points - points.mean(0)
  axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
  xy = centred @ axes.T
  palette = viz_segments.label_palette(tree.num_classes(1))
  high_ids = np.flatnonzero(high_seen)
  low_parents = tree.parents[0][np.flatnonzero(low_seen)]
  figure = _canvas.new_figure(width=5.5, height=5.0)
  ax = figure.add_subplot(1, 1, 1)
  ax.scatter(xy[len(high):, 0], xy[len(high):, 1], c=palette[low_parents], s=18)
  ax.scatter(xy[:len(high), 0], xy[:len(high), 1], c=palette[high_ids], s=160, marker="*",
             edgecolors="black")
  for (x, y), i in zip(xy[:len(high)], high_ids):
    ax.annotate(tree.class_names[1][i], (x, y), fontsize=7)
  ax.set_title(title, fontsize=9)
  figure.tight_layout()
  return _canvas.save_png(figure, path)


def sample_pixels_per_class(samples: Sequence[tuple[np.ndarray, np.ndarray]], *,
                            per_class: int, num_classes: int, seed: int = 0
                            ) -> tuple[np.ndarray, np.ndarray]:
  """Up to `per_class` pixels of every finest class (fixed seed) from (features (B, h, w, C),
  labels (B, h, w)) batches: (features (n, C), labels (n,)), classes in order."""
  features = np.concatenate([f.reshape(-1, f.shape[-1]) for f, _ in samples])
  labels = np.concatenate([l.reshape(-1) for _, l in samples])
  rng = np.random.default_rng(seed)
  chosen = []
  for c in range(num_classes):
    where = np.flatnonzero(labels == c)
    chosen.append(np.sort(rng.choice(where, min(per_class, len(where)), replace=False)))
  chosen = np.concatenate(chosen).astype(np.int64)
  return features[chosen], labels[chosen]


def sibling_shades(tree: label_tree_lib.LabelTree) -> np.ndarray:
  """(num finest classes, 3) RGB in [0, 1]: one hue per level-1 class, its children in
  shades of it from dark to light (Fig. 4: "similar color tones denote classes belonging to
  the same higher-level concept")."""
  from jhseg.viz import segments as viz_segments  # pylint: disable=import-outside-toplevel
  hues = viz_segments.label_palette(tree.num_classes(1))
  colours = np.zeros((tree.num_classes(0), 3))
  for coarse in range(tree.num_classes(1)):
    children = tree.children(coarse, 1)
    for k, child in enumerate(children):
      t = k / max(len(children) - 1, 1)  # 0: darkest, 1: lightest
      dark, light = 0.55 * hues[coarse], hues[coarse] + 0.45 * (1.0 - hues[coarse])
      colours[child] = (1.0 - t) * dark + t * light if len(children) > 1 else hues[coarse]
  return colours


def save_embedding_tsne_png(path: str, features: np.ndarray, labels: np.ndarray, *,
                            tree: label_tree_lib.LabelTree, title: str) -> str | None:
  """t-SNE (`jhseg.viz.tsne`) of sampled pixel features coloured by finest class in shades
  of its parent's hue (`sibling_shades`), the legend naming each class and its parent
  (Fig. 4). Nothing is written for < 4 pixels."""
  from jhseg.viz import _canvas  # pylint: disable=import-outside-toplevel
  from jhseg.viz import tsne  # pylint: disable=import-outside-toplevel
  if len(labels) < 4:
    return None
  xy = tsne.tsne(features, perplexity=30.0, num_iterations=1000, seed=0)
  palette = sibling_shades(tree)
  parent = tree.fine_to_level(1)
  figure = _canvas.new_figure(width=7.5, height=5.5)
  ax = figure.add_subplot(1, 1, 1)
  for c in np.unique(labels):
    keep = labels == c
    ax.scatter(xy[keep, 0], xy[keep, 1], s=8, color=palette[c],
               label=f"{tree.class_names[0][c]} ({tree.class_names[1][parent[c]]})")
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(fontsize=5, markerscale=1.5, loc="center left", bbox_to_anchor=(1.0, 0.5))
  ax.set_title(title, fontsize=9)
  figure.tight_layout()
  return _canvas.save_png(figure, path)


def save_per_class_iou_png(path: str, levels: dict, *, title: str) -> str:
  """One horizontal bar chart of the per-class IoU per level (Tables 7-8 as a picture)."""
  from jhseg.viz import _canvas  # pylint: disable=import-outside-toplevel
  rows = max(len(level["per_class_iou"]) for level in levels.values())
  figure = _canvas.new_figure(width=4.5 * len(levels), height=1.0 + 0.18 * rows)
  for k, (name, level) in enumerate(levels.items()):
    ax = figure.add_subplot(1, len(levels), k + 1)
    names = list(level["per_class_iou"])
    values = [0.0 if not np.isfinite(v) else 100 * v for v in level["per_class_iou"].values()]
    ax.barh(range(len(names)), values, color="tab:blue")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(f"{name}: mIoU {100 * level['miou']:.2f}", fontsize=9)
  figure.suptitle(title, fontsize=10)
  figure.tight_layout()
  return _canvas.save_png(figure, path)
