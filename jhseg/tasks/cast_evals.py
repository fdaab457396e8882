"""CAST's recognition and segmentation read-outs (Ke, Mo, Yu, ICLR 2024), as evaluators.

Each `evaluate_*` below is one entry of `CASTMoCo.evaluations()` (`config.evals.<name>.
method`), run on the frozen encoder of a trained model (`task.encoder_of(model)`):

  linear_probe   (sec. 4.3, Table 4; appendix E.5) a linear classifier trained on the
                 cached class-token embeddings of `options.train_split` with MoCo-v3's
                 probe recipe (`jhseg.metrics.linear_probe`), top-1 on the evaluator's
                 split. Options: train_split, num_train_examples, num_classes, epochs (90),
                 batch_size (256), base_learning_rate (0.8, the paper's IN-100 value).
  figure_ground  (sec. 4.3, Table 5; appendix F.4-F.5) the class token's attention in the
                 last block of stage `options.stage` (default the third of four, the
                 paper's 9th block over 32 coarse tokens), per head; every head keeps the
                 tokens holding `options.mass` (0.6) of its attention (DINO's procedure,
                 `keep_attention_mass`), and so does the head-mean attention. Scores
                 against the foreground (`config.eval.label_field` > 0, void 255
                 ignored, when the dataset has that field): Jaccard of the best head
                 (DINO's protocol, one figure per image) and of the head-mean mask, next
                 to the all-foreground mask.
                 Writes `<k>_figure_ground.png` (image, mean attention, mask, truth).
                 On PartImageNet (`experiments/configs/cast_deit.py:
                 partimagenet_figure_ground`) the truth is the annotated object, i.e. the
                 union of its part masks (`object_class` > 0, the authors' background is
                 the pixels no part covers), on the authors' view of the images
                 (`center_crop_example`, via `config.eval.center_crop`).
                 Options: stage, mass, num_pictures, image_classes (only the images
                 whose `label` is listed, e.g. the ImageNet dogs of appendix B's figure).
  tta            (appendix B; `label` and `config.eval.label_field` used when present)
                 test-time adaptation: a prototype classifier (the mean unit embedding
                 of each class of `options.train_split`, cosine / 0.07), and per
                 image one SGD step (lr 1.0) on the normalisation layers' scale and bias
                 minimising the prediction entropy (TENT). Reports the entropy, accuracy
                 and the foreground IoU of level `options.level`'s segments labelled by
                 the majority of the true foreground (the paper's oracle labelling),
                 before and after. `options.positive_classes` (a list of `label`s)
                 makes the classes binary, as appendix B.1's dog vs non-dog classifier:
                 1 for those labels, 0 for the rest (`cast.py:partimagenet_tta`).
  retrieval      (sec. 4.2, Table 3a; appendix E.5) segment retrieval after SegSort: the
                 segments of level `options.level` (default the coarsest) pooled into unit
                 features, labelled by kNN (k 20) against a memory of the segments of
                 `options.memory_split` (`jhseg.metrics.retrieval`); mIoU over
                 `config.eval.label_field` (void 255 ignored); options.num_classes.

Faithfulness (deviations and reasons):
  * linear probe: cached features of the evaluation view, no random-resized-crop / flip
    per epoch (see `jhseg.metrics.linear_probe`).
  * figure-ground: the token masks are painted on the token's pixels (superpixels or
    coarse regions), not on a patch grid; the attention is the model's own (padded tokens
    masked out). The authors' figure-ground code is not public: the per-head Jaccard and
    the best head per image follow DINO's authors' description.
  * figure-ground on PartImageNet is not in the paper (its figure-ground is on VOC,
    Table 5; PartImageNet serves part-to-whole recognition and TTA). It follows the
    authors' PartImageNet notebooks for the view (shorter side to 224, centre crop; image
    bicubic, labels nearest; val split) and the truth (any part = foreground).
  * retrieval: the segment features are the classification CAST's tokens of every level
    unpooled to the superpixels, each unit-normalised and concatenated (a hypercolumn
    without the learned fusion layer and 3-layer head of the authors' segmentation
    variant, `cast_seg`, and without its extra graph pooling); the segments are the
    level's clusters (not split into connected components), as the authors'.
  * TTA: BatchNorm keeps its running statistics (eval mode; one image, no batch
    information, as the paper says); the adapted parameters are the scale and bias of
    every LayerNorm and BatchNorm of the encoder. The PartImageNet dog-vs-rest setting is
    replaced by the evaluator's dataset and classes.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jhseg import segments as segment_ops  # `segments` names label maps here
from jhseg.metrics import linear_probe
from jhseg.metrics import retrieval
from jhseg.metrics import semantic
from jhseg.models import cast as cast_lib
from jhseg.models import cast_hierarchy
from jhseg.models import cast_pooling
from jhseg.tasks import outputs

if TYPE_CHECKING:
  from jhseg.tasks.cast import CASTMoCo
  from jhseg.train.evaluators import EvalContext

FOREGROUND_MASS = 0.6           # DINO / CAST appendix F.5
TTA_TEMPERATURE = 0.07          # appendix B.1
TTA_LEARNING_RATE = 1.0
VOID = retrieval.VOID


# ----------------------------------------------------------------------------- attention


def attention_weights(attention: cast_pooling.Attention, x: jax.Array,
                      mask: jax.Array | None) -> jax.Array:
  """(B, heads, N, N) softmax weights of `attention` on (already normalised) x (B, N, D),
  the same computation as `cast_pooling.Attention.__call__` before the values."""
  b, n, d = x.shape
  heads = attention.num_heads
  qkv = attention.qkv(x).reshape(b, n, 3, heads, d // heads)
  logits = jnp.einsum("bqhd,bkhd->bhqk", qkv[:, :, 0], qkv[:, :, 1]) * (d // heads) ** -0.5
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
  return jax.nn.softmax(logits, axis=-1)


def class_token_attention(encoder: cast_lib.CAST, images: jax.Array, superpixels: jax.Array,
                          segment_mask: jax.Array, *, stage: int
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The class token's attention to the tokens of `stage`'s last block.

  Runs the encoder's forward pass (`CAST.__call__`) up to that block.

  Returns:
    attention (B, heads, N) over the stage's N tokens (rows sum to 1 over valid ones),
    token_mask (B, N), and token_of_superpixel (B, S): the stage token holding each
    superpixel (stage 0: the superpixel itself; stage l: its level-l region id).
  """
  if not 0 <= stage < len(encoder.stages):
    raise ValueError(f"class_token_attention: stage={stage} must be in "
                     f"[0, {len(encoder.stages)})")
  tokens, mask = encoder.segment_tokens(images, superpixels, segment_mask)
  b, s = mask.shape
  cls = jnp.broadcast_to(encoder.cls_token[...], (b, 1, encoder.config.dim))
  token_of = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  for index, (blocks, pool) in enumerate(zip(encoder.stages, encoder.pools)):
    x = jnp.concatenate([cls, tokens], axis=1)
    x_mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
    for block in blocks[:-1]:
      x = block(x, x_mask)
    if index == stage:
      weights = attention_weights(blocks[-1].attn, blocks[-1].norm1(x), x_mask)
      return weights[:, :, 0, 1:], mask, token_of
    x = blocks[-1](x, x_mask)
    pooled = pool(x[:, :1], x[:, 1:], mask)
    assignment = jnp.argmax(pooled.logits, axis=-1).astype(jnp.int32)
    token_of = jnp.take_along_axis(assignment, token_of, axis=1)
    cls, tokens = pooled.class_token, pooled.tokens
    mask = jnp.ones(tokens.shape[:2], bool)
  raise AssertionError("unreachable")


def keep_attention_mass(attention: jax.Array, mass: float = FOREGROUND_MASS) -> jax.Array:
  """Bool mask of the largest entries holding `mass` of the attention (last axis).

  DINO's rule: sort ascending, normalise, keep the entries whose cumulative sum exceeds
  1 - mass; equivalently, in descending order keep an entry while the mass before it is
  below `mass` (so the kept mass is >= `mass`, the crossing entry included). Zero
  entries (padded tokens) are never kept. jit-able.
  """
  p = attention / jnp.maximum(jnp.sum(attention, axis=-1, keepdims=True), 1e-30)
  order = jnp.argsort(-p, axis=-1, stable=True)
  ranked = jnp.take_along_axis(p, order, axis=-1)
  keep_ranked = (jnp.cumsum(ranked, axis=-1) - ranked < mass) & (ranked > 0)
  return jnp.take_along_axis(keep_ranked, jnp.argsort(order, axis=-1), axis=-1)


def center_crop_box(height: int, width: int, size: int, *,
                    short_side: int | None = None) -> tuple[int, int, int, int]:
  """(resized height, resized width, top, left) of torchvision's Resize(short_side) (the
  shorter side to `short_side`, default `size`, the longer truncated) then CenterCrop(size)
  (offsets rounded)."""
  short = size if short_side is None else short_side
  if height <= width:
    new_h, new_w = short, int(short * width / height)
  else:
    new_h, new_w = int(short * height / width), short
  return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def center_crop_example(example: Mapping[str, Any], *, size: int, label_field: str | None,
                        ratio: float = 1.0) -> dict[str, Any]:
  """The shorter side resized to int(size / ratio) (image bicubic, `label_field` nearest),
  then the centre size x size: with ratio 1 the authors' PartImageNet view
  (`notebooks/eval_ovseg_cast.ipynb`), with 0.875 MoCo-v3's Resize(256) + CenterCrop(224).
  Keeps `image`, `label` (if any) and `label_field`; other fields are dropped."""
  import cv2  # pylint: disable=g-import-not-at-top  (optional heavy import)
  image = np.asarray(example["image"])
  new_h, new_w, top, left = center_crop_box(*image.shape[:2], size,
                                           short_side=int(size / ratio))
  resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h),
                       interpolation=cv2.INTER_CUBIC)
  out = {"image": resized[top:top + size, left:left + size]}
  if "label" in example:
    out["label"] = example["label"]
  if label_field:
    if label_field not in example:
      raise ValueError(f"cast task: config.eval.label_field={label_field!r} is not a field of "
                       f"the dataset (it has {sorted(example)})")
    labels = np.asarray(example[label_field])
    if labels.shape != image.shape[:2]:
      raise ValueError(f"cast task: field {label_field!r} (config.eval.label_field) has shape "
                       f"{labels.shape}; expected the image's {image.shape[:2]}")
    # Nearest (torch's "nearest": source floor(i * in / out)), then the same crop.
    resized_labels = segment_ops.resize_labels_nearest(labels[None], new_h, new_w)[0]
    out[label_field] = resized_labels[top:top + size, left:left + size]
  return out


def jaccard(mask: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> float:
  """|mask & truth| / |mask | truth| over the valid pixels (1 when both are empty)."""
  mask, truth = mask & valid, truth & valid
  union = np.sum(mask | truth)
  return float(np.sum(mask & truth) / union) if union else 1.0


# ----------------------------------------------------------------------------- TTA


def normalisation_filter(module: nnx.Module):
  """nnx filter of the Params (scale, bias) of every LayerNorm and BatchNorm in `module`."""
  prefixes = [tuple(path) for path, node in nnx.iter_graph(module)
              if isinstance(node, (nnx.LayerNorm, nnx.BatchNorm))]

  def is_normalisation(path, value=None) -> bool:
    path = tuple(path)
    return (isinstance(value, nnx.Param) or value is None) and any(
        path[:len(p)] == p for p in prefixes)

  return nnx.All(nnx.Param, is_normalisation)


def class_prototypes(features: np.ndarray, labels: np.ndarray, num_classes: int
                     ) -> np.ndarray:
  """(C, D) unit mean of the unit-normalised features of each class (zero if absent)."""
  features = np.asarray(features, np.float64)
  unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  sums = np.zeros((num_classes, features.shape[1]))
  np.add.at(sums, np.asarray(labels).astype(np.int64), unit)
  norms = np.linalg.norm(sums, axis=1, keepdims=True)
  return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def prototype_logits(embedding: jax.Array, prototypes: jax.Array, *,
                     temperature: float = TTA_TEMPERATURE) -> jax.Array:
  """cos(embedding, prototype_c) / temperature; classes without a prototype get -inf."""
  unit = embedding / jnp.maximum(jnp.linalg.norm(embedding, axis=-1, keepdims=True), 1e-12)
  present = jnp.linalg.norm(prototypes, axis=-1) > 0
  return jnp.where(present, unit @ prototypes.T / temperature, -jnp.inf)


def prediction_entropy(logits: jax.Array) -> jax.Array:
  """H = -sum_c p_c log p_c of softmax(logits) (last axis); -inf logits contribute 0."""
  log_p = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.where(jnp.isfinite(log_p), jnp.exp(log_p) * log_p, 0.0), axis=-1)


def make_tta(encoder: cast_lib.CAST, *, learning_rate: float = TTA_LEARNING_RATE,
             temperature: float = TTA_TEMPERATURE):
  """A jitted per-image TENT step on `encoder` (eval mode).

  Returns `adapt(images, superpixels, segment_mask, prototypes)` -> dict with, per image
  b of the batch (each adapted alone from the same encoder): entropy_before/after (B,),
  logits_before/after (B, C), nested_before/after (B, L + 1, H, W) and `adapted`, the
  normalisation parameters after the step (leading axis B). The step is
  theta_b = theta - lr d H(p(x_b; theta)) / d theta over the normalisation scale and bias.
  """
  graphdef, norms, rest = nnx.split(encoder, normalisation_filter(encoder), ...)

  def forward(norm_params, image, sp, mask, prototypes):
    model = nnx.merge(graphdef, norm_params, rest)
    out = model(image[None], sp[None], mask[None])
    logits = prototype_logits(out.embedding, prototypes, temperature=temperature)[0]
    return prediction_entropy(logits), (logits, cast_hierarchy.nested_label_maps(
        sp[None], out.levels)[0])

  def one(image, sp, mask, prototypes):
    (entropy, (logits, nested)), grads = jax.value_and_grad(forward, has_aux=True)(
        norms, image, sp, mask, prototypes)
    adapted = jax.tree.map(lambda p, g: p - learning_rate * g, norms, grads)
    entropy_after, (logits_after, nested_after) = forward(adapted, image, sp, mask,
                                                          prototypes)
    return {"entropy_before": entropy, "entropy_after": entropy_after,
            "logits_before": logits, "logits_after": logits_after,
            "nested_before": nested, "nested_after": nested_after, "adapted": adapted}

  @jax.jit
  def adapt(images, superpixels, segment_mask, prototypes):
    return jax.vmap(one, in_axes=(0, 0, 0, None))(images, superpixels, segment_mask,
                                                  prototypes)

  return adapt


def majority_foreground(segments: np.ndarray, foreground: np.ndarray,
                        valid: np.ndarray) -> np.ndarray:
  """Pixels of the segments whose valid pixels are mostly foreground (ties: background)."""
  ids = np.asarray(segments).ravel()
  fg = np.bincount(ids[valid.ravel()], weights=foreground.ravel()[valid.ravel()],
                   minlength=ids.max() + 1)
  total = np.bincount(ids[valid.ravel()], minlength=ids.max() + 1)
  return (2 * fg > total)[segments]


def foreground_iou(prediction: np.ndarray, foreground: np.ndarray, valid: np.ndarray
                   ) -> float:
  """Mean of the foreground and background IoU (the two-class mIoU of appendix B)."""
  return 0.5 * (jaccard(prediction, foreground, valid) + jaccard(~prediction, ~foreground,
                                                                 valid))


# ----------------------------------------------------------------------------- evaluators


def _option(options, name: str, default):
  value = options.get(name)
  return default if value is None else value


def _label_map(values: Mapping[str, np.ndarray], i: int, height: int, width: int,
               evaluator: str) -> np.ndarray:
  if "label_map" not in values:
    raise ValueError(f"cast evaluator {evaluator!r}: needs config.eval.label_field naming a "
                     f"per-pixel class map of the dataset")
  return values["label_map"][i][:height, :width]


def _levels_at_original(nested: np.ndarray, scaled, size) -> np.ndarray:
  """(K, h, w) maps of the padded resized image -> (K, H, W) at the original size."""
  sh, sw = (int(s) for s in scaled)
  return segment_ops.resize_labels_nearest(nested[:, :sh, :sw], *(int(s) for s in size))


def evaluate_linear_probe(task: "CASTMoCo", model, ctx: "EvalContext") -> dict[str, Any]:
  options = ctx.options
  (train_f, train_y), (test_f, test_y), num_classes = task.train_and_test_features(model, ctx)
  probe = linear_probe.ProbeOptions(
      epochs=int(_option(options, "epochs", 90)),
      batch_size=int(_option(options, "batch_size", 256)),
      base_learning_rate=float(_option(options, "base_learning_rate", 0.8)))
  accuracy = linear_probe.linear_probe_accuracy(train_f, train_y, test_f, test_y,
                                                num_classes=num_classes, options=probe,
                                                seed=int(_option(options, "seed", 0)))
  scalars = {"linear_probe_top1": accuracy, "num_train": float(len(train_y)),
             "num_test": float(len(test_y))}
  outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars,
                                      "num_classes": num_classes,
                                      "probe": probe.__dict__})
  return scalars


def evaluate_figure_ground(task: "CASTMoCo", model, ctx: "EvalContext") -> dict[str, Any]:
  options = ctx.options
  encoder = task.encoder_of(model)
  stage = int(_option(options, "stage", max(len(encoder.stages) - 2, 0)))
  mass = float(_option(options, "mass", FOREGROUND_MASS))
  classes = _option(options, "image_classes", None)
  classes = None if classes is None else frozenset(int(c) for c in classes)
  forward = nnx.jit(lambda m, i, s, k: class_token_attention(m, i, s, k, stage=stage))
  scores = {"best_head": [], "mean_attention": [], "all_foreground": []}
  pictures = []
  num_images = 0
  for batch in ctx.batches():
    attention, _, token_of = forward(encoder, batch["image"], batch["superpixels"],
                                              batch["segment_mask"])
    heads = keep_attention_mass(attention, mass)
    mean = jnp.mean(attention, axis=1)
    values = outputs.to_host({
        "heads": heads, "mean_keep": keep_attention_mass(mean, mass), "mean": mean,
        "token_of": token_of, "sp": batch["superpixels"], "mask": batch["example_mask"],
        "scaled": batch["scaled_size"], "size": batch["size"], "original": batch["original"],
        **({"label_map": batch["label_map"]} if "label_map" in batch else {}),
        **({"label": batch["label"]} if "label" in batch else {})})
    for i in np.flatnonzero(values["mask"]):
      if classes is not None:
        if "label" not in values:
          raise ValueError(f"cast evaluator {ctx.name!r}: options.image_classes needs the "
                           f"dataset's image-level 'label' field")
        if int(values["label"][i]) not in classes:
          continue
      num_images += 1
      height, width = (int(s) for s in values["size"][i])
      tokens = _levels_at_original(values["sp"][i][None], values["scaled"][i],
                                   values["size"][i])[0]
      inside = tokens >= 0
      token = np.where(inside, values["token_of"][i][np.maximum(tokens, 0)], 0)
      head_masks = values["heads"][i][:, token] & inside           # (heads, H, W)
      mean_mask = values["mean_keep"][i][token] & inside
      picture = [values["original"][i][:height, :width],
                 np.where(inside, values["mean"][i][token], 0.0), mean_mask]
      if "label_map" in values:
        labels = _label_map(values, i, height, width, ctx.name)
        valid, truth = (labels >= 0) & (labels != VOID), labels > 0
        scores["best_head"].append(max(jaccard(m, truth, valid) for m in head_masks))
        scores["mean_attention"].append(jaccard(mean_mask, truth, valid))
        scores["all_foreground"].append(jaccard(np.ones_like(truth), truth, valid))
        picture.append(truth & valid)
      if len(pictures) < int(_option(options, "num_pictures", 4)):
        pictures.append(picture)
  scalars = {f"jaccard_{k}": float(np.mean(v)) for k, v in scores.items() if v}
  scalars["num_images"] = float(num_images)
  if jax.process_index() == 0:
    _write_panels(ctx.out_dir, "figure_ground", pictures)
    outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars, "stage": stage,
                                        "mass": mass})
  return scalars


def binary_labels(labels, positive_classes: Sequence[int]) -> np.ndarray:
  """1 where `labels` is one of `positive_classes` (e.g. ImageNet's dog breeds), else 0."""
  return np.isin(np.asarray(labels), np.asarray(list(positive_classes))).astype(np.int32)


def evaluate_tta(task: "CASTMoCo", model, ctx: "EvalContext") -> dict[str, Any]:
  options = ctx.options
  encoder = task.encoder_of(model)
  train_split = options.get("train_split") or task.config.data.train_split
  train_f, train_y = task.features(model, ctx.batches(
      train_split, dataset=ctx.evaluator.dataset, transforms=task.knn_transforms(),
      num_examples=options.get("num_train_examples")))
  positive = options.get("positive_classes")
  class_of = (lambda y: y) if positive is None else (lambda y: binary_labels(y, positive))
  train_y = class_of(train_y)
  num_classes = int(options.get("num_classes") or train_y.max() + 1)
  prototypes = jnp.asarray(class_prototypes(train_f, train_y, num_classes))
  level = int(_option(options, "level", len(encoder.stages)))
  adapt = make_tta(encoder, learning_rate=float(_option(options, "learning_rate",
                                                        TTA_LEARNING_RATE)),
                   temperature=float(_option(options, "temperature", TTA_TEMPERATURE)))
  rows = {k: [] for k in ("entropy_before", "entropy_after", "correct_before",
                          "correct_after", "fg_miou_before", "fg_miou_after")}
  for batch in ctx.batches():
    out = adapt(batch["image"], batch["superpixels"], batch["segment_mask"], prototypes)
    out.pop("adapted")
    values = outputs.to_host({**out, "mask": batch["example_mask"],
                              "scaled": batch["scaled_size"], "size": batch["size"],
                              **{k: batch[k] for k in ("label", "label_map") if k in batch}})
    for i in np.flatnonzero(values["mask"]):
      height, width = (int(s) for s in values["size"][i])
      for when in ("before", "after"):
        rows[f"entropy_{when}"].append(float(values[f"entropy_{when}"][i]))
        if "label" in values:
          rows[f"correct_{when}"].append(
              float(np.argmax(values[f"logits_{when}"][i]) == class_of(values["label"][i])))
        if "label_map" in values:
          levels = _levels_at_original(values[f"nested_{when}"][i], values["scaled"][i],
                                       values["size"][i])
          labels = _label_map(values, i, height, width, ctx.name)
          valid = (labels >= 0) & (labels != VOID)
          segments = np.maximum(levels[level], 0)
          prediction = majority_foreground(segments, labels > 0, valid & (levels[level] >= 0))
          rows[f"fg_miou_{when}"].append(foreground_iou(prediction, labels > 0, valid))
  names = {"correct_before": "accuracy_before", "correct_after": "accuracy_after"}
  scalars = {names.get(k, k): float(np.mean(v)) for k, v in rows.items() if v}
  scalars["num_images"] = float(len(rows["entropy_before"]))
  outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars, "level": level,
                                      "num_classes": num_classes})
  return scalars


def superpixel_hypercolumns(levels: Sequence[cast_lib.LevelOutput]) -> jax.Array:
  """(B, S, L x D): every level's tokens unpooled to the superpixels, each unit-normalised,
  concatenated (level l's tokens are the level-(l-1) regions; level 1's the superpixels)."""
  ids = [None] + cast_hierarchy.superpixel_region_ids(levels)[:-1]
  columns = []
  for level, region_of in zip(levels, ids):
    tokens = level.tokens if region_of is None else jnp.take_along_axis(
        level.tokens, region_of[..., None], axis=1)
    columns.append(tokens / jnp.maximum(jnp.linalg.norm(tokens, axis=-1, keepdims=True),
                                        1e-12))
  return jnp.concatenate(columns, axis=-1)


def evaluate_retrieval(task: "CASTMoCo", model, ctx: "EvalContext") -> dict[str, Any]:
  options = ctx.options
  encoder = task.encoder_of(model)
  level = int(_option(options, "level", len(encoder.stages)))
  num_classes = int(options.get("num_classes") or 0)
  if num_classes < 1:
    raise ValueError(f"cast evaluator {ctx.name!r}: options.num_classes is required "
                     f"(the classes of config.eval.label_field)")
  k = int(_option(options, "k", retrieval.NUM_NEIGHBOURS))

  @nnx.jit
  def segment(encoder, images, superpixels, mask):
    out = encoder(images, superpixels, mask)
    return (superpixel_hypercolumns(out.levels),
            cast_hierarchy.nested_label_maps(superpixels, out.levels))

  def images_of(batches):
    for batch in batches:
      features, nested = segment(encoder, batch["image"], batch["superpixels"],
                                 batch["segment_mask"])
      values = outputs.to_host({"f": features, "nested": nested, "mask": batch["example_mask"],
                                "scaled": batch["scaled_size"], "size": batch["size"],
                                "label_map": batch["label_map"]})
      for i in np.flatnonzero(values["mask"]):
        height, width = (int(s) for s in values["size"][i])
        levels = _levels_at_original(values["nested"][i], values["scaled"][i],
                                     values["size"][i])
        count = int(levels[level].max()) + 1 if level else values["f"].shape[1]
        prototypes, valid = retrieval.segment_prototypes(values["f"][i], levels[0],
                                                         np.maximum(levels[level], 0), count)
        yield (prototypes, valid, levels, values["label_map"][i][:height, :width])

  memory_split = options.get("memory_split") or task.config.data.train_split
  rows, row_labels = [], []
  for prototypes, valid, levels, labels in images_of(ctx.batches(
      memory_split, dataset=ctx.evaluator.dataset,
      num_examples=options.get("num_memory_examples"))):
    segments = np.where(levels[0] >= 0, levels[level], -1)
    majority = retrieval.segment_majority_labels(segments, labels, len(prototypes),
                                                 num_classes)
    r, l = retrieval.memory_from_segments(prototypes, valid, majority)
    rows.append(r)
    row_labels.append(l)
  memory = (np.concatenate(rows), np.concatenate(row_labels))
  confusion = semantic.ConfusionMatrix(num_classes, ignore_index=VOID)
  num_images = 0
  for prototypes, valid, levels, labels in images_of(ctx.batches()):
    num_images += 1
    classes = retrieval.knn_vote(prototypes, *memory, num_classes=num_classes, k=k)
    keep = (levels[0] >= 0) & (labels >= 0)
    confusion.add(labels[keep], classes[levels[level]][keep])
  result = confusion.result()
  scalars = {"retrieval_miou": float(result["miou"]),
             "retrieval_pixel_accuracy": float(result["pixel_accuracy"]),
             "memory_segments": float(len(memory[1])), "num_images": float(num_images)}
  outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars, "level": level,
                                      "k": k, "iou": result["iou"]})
  return scalars


def _write_panels(out_dir: str, name: str, pictures: Sequence[Sequence[np.ndarray]]) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  import matplotlib.image  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  for index, panels in enumerate(pictures):
    rgb = []
    for panel in panels:
      panel = np.asarray(panel, np.float32)
      if panel.ndim == 2:
        top = panel.max()
        panel = matplotlib.colormaps["viridis"](panel / top if top > 0 else panel)[..., :3]
      rgb.append(np.clip(panel, 0.0, 1.0))
    matplotlib.image.imsave(os.path.join(out_dir, f"{index}_{name}.png"),
                            np.concatenate(rgb, axis=1))
