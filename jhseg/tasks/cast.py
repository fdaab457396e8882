"""CAST (Ke, Mo, Yu, "Learning Hierarchical Image Segmentation for Recognition and by
Recognition", ICLR 2024) trained with MoCo-v3 on the shared engine.

Training (paper section 4, appendix E.4 Table 11; the authors' `main_moco_suppix.py`):
two augmented 224^2 views of each image (`two_views`: random resized crop of scale
[0.08, 1], colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2, Gaussian blur
sigma in [0.1, 2] with p 1.0 / 0.1, solarisation p 0 / 0.2, horizontal flip p 0.5), SEEDS
superpixels of each view on the host (196 at 224^2, `jhseg.superpixels.seeds`, fixed
count padded with a mask), ImageNet normalisation; then the MoCo-v3 loss of
`jhseg.models.cast_moco` on the CAST encoder with projector, predictor and momentum
branch (temperature 0.2, momentum 0.99 -> 1 by the cosine schedule of `ctx.progress`,
applied in `after_update`, once per optimizer update). AdamW, lr 1.5e-4 x batch / 256,
weight decay 0.1, warm-up + cosine (the config's `optim`).

What is trained (`trainable()`): the parameters of encoder, projector and predictor,
except the momentum branch (updated by `after_update` only) and the last pooling's
fc1 / fc2 / centroid_fc, which the authors freeze (`cast.frozen_by_authors`).

Evaluations (`config.evals.<name>.method`):
  hierarchy  CAST's segmentation hierarchy S_0 (the SEEDS superpixels) ... S_4 (8 regions)
             from the graph poolings (`jhseg.models.cast_hierarchy`), as a UCM with one
             altitude per level, scored against every human segmentation by the BSDS
             boundary benchmark (ODS / OIS / AP, `jhseg.metrics.boundary`) and the region
             benchmark (covering ODS / OIS, PRI, VOI, `jhseg.metrics.region`), next to the
             same superpixels merged by mean LAB colour (`jhseg.baselines`, single linkage
             by default, as DEL's baseline) in the same run. Writes summary.json, the PR
             curves and, for the first images, the five nested levels as PNGs.
  knn        weighted k-NN top-1 accuracy (`jhseg.metrics.knn`, k 20, T 0.07) of the
             encoder's embedding: train features from `options.train_split` (default the
             training split), queries from the evaluator's split; needs a `label` field.
  linear_probe, figure_ground, tta, retrieval
             the linear probe, the class token's figure-ground attention, test-time
             adaptation and segment retrieval of `jhseg.tasks.cast_evals` (options and
             their deviations from the paper there). Per-pixel classes (foreground = class
             > 0, VOC's void 255 ignored) come from `config.eval.label_field`.

Evaluation geometry: the image is resized by `config.eval.scale` (the model is trained
on 224^2 views; BSDS500's 481x321 images at 0.5 hold objects at about the training
scale), SEEDS runs on the resized image with `config.eval.num_superpixels`, the result is
padded to `config.eval.image_size` (multiple of 8; padding pixels have superpixel -1 and
no token) and every level is resized back to the original image by nearest neighbour
(which keeps the levels nested) before scoring at full resolution.

Faithfulness (deviations and their reasons):
  * the resizes of the random resized crop use OpenCV (area when shrinking, bilinear
    when enlarging) instead of PIL's antialiased bilinear; Gaussian blur is SciPy's
    with sigma = PIL's radius; the photometric steps run on floats (no uint8 round
    trip between them); SEEDS gets the authors' truncated uint8 image.
  * the last batch of an epoch is not dropped (the engine streams examples); MoCo needs
    no fixed epoch.
  * the keys of the contrastive loss are the whole global batch, as the authors'
    all-gather; mixed precision is not used (float32 throughout).
  * both views go through each branch in one pass of 2B images (the authors make one
    pass per view), which halves the compiled program; BatchNorm statistics (stem and
    MLP heads) are therefore over both views' 2B images instead of each view's B (same
    distribution; with the paper's batch of 256 the difference is noise).
  * MoCo-v3's `stop_grad_conv1` does nothing for CAST's convolutional stem, as in the
    authors' code (see `jhseg.models.cast`): no stem layer is frozen.
  * the evaluators of `jhseg.tasks.cast_evals` (details in its Faithfulness section):
    - linear probe: trained on cached features of the evaluation view, without the
      authors' per-epoch random-resized-crop and flip (CPU-sized);
    - figure-ground: the kept tokens' masks are painted on their superpixels / coarse
      regions (no patch grid); the stage is the third of four, which is the paper's 9th
      block only for depths [3, 3, 3, 2]; the authors' scoring code is not public, so
      the best head per image follows DINO's description;
    - segment retrieval: the classification model's tokens of every level unpooled to
      the superpixels and concatenated, instead of the authors' segmentation variant
      (`cast_seg`: learned hypercolumn fusion, 3-layer head, an extra graph pooling);
      the memory may be limited to `num_memory_examples` images; no VOC config here
      (VOC would need `eval.label_field = "segmentation"` and the paper's 512^2 / 784
      superpixels);
    - test-time adaptation: BatchNorm keeps its running statistics (eval mode); the
      evaluator's dataset and classes replace PartImageNet's dog vs rest; the default
      `tiny` run leaves it out (variant `tiny_tta`) for its compile time.
  * the BSDS500 hierarchy evaluation is ours: the paper shows BSDS-style hierarchies
    but reports no BSDS500 numbers. The UCM gives each level one altitude
    ((k + 1) / 5 for the boundaries first separating at level k), so the boundary PR
    curve has five points at most.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from scipy import ndimage

from jhseg import baselines
from jhseg import grid
from jhseg import segments
from jhseg.data import multiview
from jhseg.data import options as options_lib
from jhseg.data.transforms import random_transform, segmentation_stack
from jhseg.hierarchy import superpixel_graph
from jhseg.metrics import boundary
from jhseg.metrics import knn
from jhseg.metrics import ucm_evaluation
from jhseg.models import cast as cast_lib
from jhseg.models import cast_hierarchy
from jhseg.models import cast_moco
from jhseg.superpixels import seeds
from jhseg.tasks import cast_evals
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Evaluation, Example, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
IGNORE = -1


# ----------------------------------------------------------------------------- augmentation


@dataclasses.dataclass(frozen=True)
class ViewOptions:
  """MoCo-v3's two view augmentations (defaults: the authors' `main_moco_suppix.py`)."""
  crop_size: int = 224
  min_scale: float = 0.08
  max_scale: float = 1.0
  min_ratio: float = 3.0 / 4.0
  max_ratio: float = 4.0 / 3.0
  jitter_probability: float = 0.8
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  grayscale_probability: float = 0.2
  blur_probabilities: tuple[float, float] = (1.0, 0.1)
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  solarize_probabilities: tuple[float, float] = (0.0, 0.2)
  flip_probability: float = 0.5

  @classmethod
  def from_config(cls, config: Mapping[str, Any] | None,
                  where: str = "config.data.augment") -> "ViewOptions":
    return options_lib.options_from_config(cls, config, where=where)


def random_resized_box(rng: np.random.Generator, height: int, width: int, *,
                       scale: tuple[float, float], ratio: tuple[float, float]
                       ) -> tuple[int, int, int, int]:
  """(top, left, h, w) of torchvision's RandomResizedCrop: up to 10 draws of an area
  fraction in `scale` and a log-uniform aspect ratio in `ratio`, else a centre crop
  with the ratio clamped."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def resize_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Float (H, W, 3) -> (height, width, 3): area averaging when shrinking, else bilinear."""
  import cv2  # pylint: disable=g-import-not-at-top  (optional heavy import)
  if image.shape[:2] == (height, width):
    return image.astype(np.float32)
  shrink = height * width < image.shape[0] * image.shape[1]
  out = cv2.resize(np.ascontiguousarray(image, np.float32), (width, height),
                   interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
  return np.clip(out, 0.0, 1.0).reshape(height, width, -1)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
  return ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0), mode="nearest")


def solarize(image: np.ndarray) -> np.ndarray:
  """PIL's `ImageOps.solarize` (threshold 128 of 255) on [0, 1] floats."""
  return np.where(image >= 128.0 / 255.0, 1.0 - image, image).astype(np.float32)


def augment_view(image: np.ndarray, rng: np.random.Generator, options: ViewOptions,
                 view: int) -> np.ndarray:
  """One MoCo-v3 view (`view` 0 or 1 selects the blur / solarisation probabilities)."""
  top, left, h, w = random_resized_box(
      rng, *image.shape[:2], scale=(options.min_scale, options.max_scale),
      ratio=(options.min_ratio, options.max_ratio))
  size = options.crop_size
  out = resize_image(image[top:top + h, left:left + w], size, size)
  jitter = multiview.MultiviewConfig(brightness=options.brightness, contrast=options.contrast,
                                     saturation=options.saturation, hue=options.hue)
  if rng.random() < options.jitter_probability:
    out = multiview.colour_jitter(out, rng, jitter)
  if rng.random() < options.grayscale_probability:
    out = multiview.grayscale(out)
  if rng.random() < options.blur_probabilities[view]:
    out = gaussian_blur(out, rng.uniform(*options.blur_sigma))
  if rng.random() < options.solarize_probabilities[view]:
    out = solarize(out)
  if rng.random() < options.flip_probability:
    out = out[:, ::-1]
  return np.ascontiguousarray(np.clip(out, 0.0, 1.0), np.float32)


def decode_image(example: Mapping[str, Any]) -> Example:
  """image float32 (H, W, 3) in [0, 1]; `label` kept when present."""
  if "image" not in example:
    raise ValueError(f"cast task: dataset example has no field 'image' (has {sorted(example)})")
  image = np.asarray(example["image"])
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"cast task: field 'image' must be uint8 (H, W, 3); got {image.dtype} "
                     f"{image.shape}")
  out = {"image": image.astype(np.float32) / 255.0}
  if "label" in example:
    out["label"] = np.asarray(example["label"], np.int32)
  return out


def normalize(image: np.ndarray) -> np.ndarray:
  return ((image - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def make_two_views(options: ViewOptions, seeds_options: seeds.SeedsOptions):
  """Random transform: image -> `views` (2, S, S, 3) normalised, `superpixels` (2, S, S)
  int32 and `segment_mask` (2, N) bool (N = seeds_options.num_superpixels)."""

  @random_transform
  def two_views(example: Example, rng: np.random.Generator) -> Example:
    views, labels, masks = [], [], []
    for view in range(2):
      image = augment_view(example["image"], rng, options, view)
      sp, mask = seeds.seeds_superpixels(image, seeds_options)  # the authors' uint8 input
      views.append(normalize(image))
      labels.append(sp)
      masks.append(mask)
    return {"views": np.stack(views), "superpixels": np.stack(labels),
            "segment_mask": np.stack(masks)}

  return two_views


# ----------------------------------------------------------------------------- evaluation data


@dataclasses.dataclass(frozen=True)
class EvalGeometry:
  """How an evaluation image is resized, over-segmented and padded (module docstring)."""
  scale: float
  image_size: tuple[int, int]         # padded size of the resized image, multiples of 8
  original_size: tuple[int, int]      # padded size of the original image and truths
  num_superpixels: int
  max_truths: int

  def scaled_shape(self, height: int, width: int) -> tuple[int, int]:
    return max(1, int(round(height * self.scale))), max(1, int(round(width * self.scale)))


def prepare_eval_example(example: Mapping[str, Any], geometry: EvalGeometry,
                         seeds_options: seeds.SeedsOptions, *,
                         segment_fields: Sequence[str] | None,
                         label_field: str | None = None) -> Example:
  """Resized, over-segmented, padded example with the original image and truths.

  `label_field` (optional): a per-pixel class map of the original size, kept as
  `label_map` padded with -1 (IGNORE).
  """
  image = decode_image(example)["image"]
  height, width = image.shape[:2]
  sh, sw = geometry.scaled_shape(height, width)
  th, tw = geometry.image_size
  oh, ow = geometry.original_size
  if sh > th or sw > tw or height > oh or width > ow:
    raise ValueError(f"cast task: an image of {height}x{width} (resized {sh}x{sw}) does not "
                     f"fit config.eval.image_size={geometry.image_size} / original_size="
                     f"{geometry.original_size}; raise them")
  if th % cast_lib.STEM_STRIDE or tw % cast_lib.STEM_STRIDE:
    raise ValueError(f"cast task: config.eval.image_size={geometry.image_size} must be "
                     f"multiples of {cast_lib.STEM_STRIDE}")
  scaled = resize_image(image, sh, sw)
  sp, mask = seeds.seeds_superpixels(scaled, seeds_options,
                                     max_segments=geometry.num_superpixels)
  out = {
      "image": np.pad(normalize(scaled), ((0, th - sh), (0, tw - sw), (0, 0))),
      "superpixels": np.pad(sp, ((0, th - sh), (0, tw - sw)), constant_values=IGNORE),
      "segment_mask": mask,
      "scaled_size": np.array([sh, sw], np.int32),
      "size": np.array([height, width], np.int32),
      "original": np.pad(image, ((0, oh - height), (0, ow - width), (0, 0))),
  }
  if "label" in example:
    out["label"] = np.asarray(example["label"], np.int32)
  if segment_fields:
    truths = segmentation_stack(example, segment_fields, who="cast task",
                                config_field="config.eval.segment_fields")
    if truths.shape[1:] != (height, width):
      raise ValueError(f"cast task: segmentations {truths.shape} do not match the image "
                       f"{image.shape}")
    if truths.shape[0] > geometry.max_truths:
      raise ValueError(f"cast task: an image has {truths.shape[0]} ground truths, more than "
                       f"config.eval.max_truths={geometry.max_truths}")
    out["truths"] = np.pad(truths, ((0, geometry.max_truths - truths.shape[0]),
                                    (0, oh - height), (0, ow - width)), constant_values=IGNORE)
    out["truth_mask"] = np.arange(geometry.max_truths) < truths.shape[0]
  if label_field:
    if label_field not in example:
      raise ValueError(f"cast task: config.eval.label_field={label_field!r} is not a field of "
                       f"the dataset (it has {sorted(example)})")
    labels = np.asarray(example[label_field]).astype(np.int32)
    if labels.shape != (height, width):
      raise ValueError(f"cast task: field {label_field!r} (config.eval.label_field) has shape "
                       f"{labels.shape}; expected the image's {(height, width)}")
    out["label_map"] = np.pad(labels, ((0, oh - height), (0, ow - width)),
                              constant_values=IGNORE)
  return out


def adjacent_pairs(labels: np.ndarray) -> np.ndarray:
  """(P, 2) int64 sorted unique pairs (i < j) of 4-adjacent distinct labels >= 0."""
  a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
  b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
  keep = (a != b) & (a >= 0) & (b >= 0)
  pairs = np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], axis=1)
  return np.unique(pairs.astype(np.int64), axis=0).reshape(-1, 2)


# ----------------------------------------------------------------------------- scoring


# ----------------------------------------------------------------------------- the task


def cast_config_of(model_config: ml_collections.ConfigDict) -> cast_lib.CASTConfig:
  """The named size `model.size` with the optional overrides dim / depths / num_heads /
  num_clusters / mlp_ratio / position_embedding / position_grid (None: the size's value)."""
  base = cast_lib.cast_config(model_config.size)
  overrides = {}
  for name in ("dim", "depths", "num_heads", "num_clusters", "mlp_ratio", "position_embedding",
               "position_grid"):
    value = model_config.get(name)
    if value is not None:
      overrides[name] = tuple(value) if name in ("depths", "num_clusters") else value
  return dataclasses.replace(base, **overrides)


class CASTMoCo(Task):
  """CAST encoder trained by MoCo-v3; hierarchy and k-NN evaluations (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.cast_config = cast_config_of(config.model)
    self._forward = None

  # --- model
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    return cast_moco.MoCoCAST(self.cast_config, dim=int(m.moco.dim),
                              mlp_dim=int(m.moco.mlp_dim),
                              drop_path_rate=float(m.get("drop_path_rate", 0.0)), rngs=rngs)

  def trainable(self) -> Any:
    frozen = cast_lib.frozen_by_authors_paths(len(self.cast_config.num_clusters),
                                              prefix=("encoder",))
    return nnx.All(nnx.Param, nnx.Not(cast_moco.is_momentum_branch), nnx.Not(frozen))

  # --- data
  def _seeds(self, num_superpixels: int) -> seeds.SeedsOptions:
    s = self.config.model.superpixels
    return seeds.SeedsOptions(num_superpixels=int(num_superpixels),
                              num_iterations=int(s.num_iterations))

  def train_transforms(self):
    views = ViewOptions.from_config(self.config.data.get("augment"))
    num = int(self.config.model.superpixels.num_superpixels)
    return [decode_image, make_two_views(views, self._seeds(num))]

  def _geometry(self) -> EvalGeometry:
    e = self.config.eval
    return EvalGeometry(scale=float(e.scale), image_size=tuple(e.image_size),
                        original_size=tuple(e.original_size),
                        num_superpixels=int(e.num_superpixels), max_truths=int(e.max_truths))

  def hierarchy_transforms(self):
    fields = tuple(self.config.eval.segment_fields)
    geometry, options = self._geometry(), self._seeds(self.config.eval.num_superpixels)
    return [lambda e: prepare_eval_example(e, geometry, options, segment_fields=fields)]

  def center_crop_transforms(self, *, label_field: str | None) -> list:
    """With `config.eval.center_crop = S`, the view every evaluation reads first: the
    shorter side resized to S / `config.eval.center_crop_ratio` (default 1: the authors'
    PartImageNet view; 0.875: MoCo-v3's / DeiT's Resize(256) + CenterCrop(224)), then the
    centre S x S (`cast_evals.center_crop_example`); for datasets of varied image sizes
    (ImageNet, PartImageNet). Without it, nothing: the whole image at `config.eval.scale`."""
    size = self.config.eval.get("center_crop")
    if not size:
      return []
    ratio = float(self.config.eval.get("center_crop_ratio") or 1.0)
    return [functools.partial(cast_evals.center_crop_example, size=int(size), ratio=ratio,
                              label_field=label_field)]

  def knn_transforms(self):
    geometry, options = self._geometry(), self._seeds(self.config.eval.num_superpixels)

    def with_label(example):
      if "label" not in example:
        raise ValueError(f"cast task: the knn evaluation needs a 'label' field (image class); "
                         f"the dataset has {sorted(example)}")
      return prepare_eval_example(example, geometry, options, segment_fields=None)

    return [*self.center_crop_transforms(label_field=None), with_label]

  def label_map_transforms(self, *, required: bool):
    """Evaluation examples with `label_map` from `config.eval.label_field`: `required`
    fails without the field; otherwise it is kept when the dataset has it."""
    field = self.config.eval.get("label_field")
    if required and not field:
      raise ValueError("cast task: this evaluation needs config.eval.label_field (the "
                       "dataset's per-pixel class map)")
    geometry, options = self._geometry(), self._seeds(self.config.eval.num_superpixels)

    def with_label_map(example):
      present = field if field and (required or field in example) else None
      return prepare_eval_example(example, geometry, options, segment_fields=None,
                                  label_field=present)

    return [*self.center_crop_transforms(label_field=field), with_label_map]

  # --- training
  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    # Both views in one pass per branch (one traced network, not four): see Faithfulness.
    b = batch["views"].shape[0]
    views = jnp.concatenate([batch["views"][:, 0], batch["views"][:, 1]])
    sp = jnp.concatenate([batch["superpixels"][:, 0], batch["superpixels"][:, 1]])
    mask = jnp.concatenate([batch["segment_mask"][:, 0], batch["segment_mask"][:, 1]])
    q = model.queries(views, sp, mask)
    k = model.keys(views, sp, mask)
    q1, q2, k1, k2 = q[:b], q[b:], k[:b], k[b:]
    temperature = float(self.config.model.moco.temperature)
    loss = (cast_moco.contrastive_loss(q1, k2, temperature=temperature)
            + cast_moco.contrastive_loss(q2, k1, temperature=temperature))
    accuracy = 0.5 * (cast_moco.retrieval_accuracy(q1, k2) + cast_moco.retrieval_accuracy(q2, k1))
    return loss, {"positive_top1": accuracy,
                  "segments_per_view": jnp.mean(jnp.sum(mask, axis=-1).astype(jnp.float32))}

  def after_update(self, model, ctx: StepContext) -> None:
    momentum = cast_moco.cosine_momentum(ctx.progress, float(self.config.model.moco.momentum))
    cast_moco.update_momentum_branch(model, momentum)

  # --- evaluation
  def evaluations(self) -> Mapping[str, Evaluation]:
    optional_labels = lambda: self.label_map_transforms(required=False)
    return {
        "hierarchy": Evaluation(self.evaluate_hierarchy, self.hierarchy_transforms),
        "knn": Evaluation(self.evaluate_knn, self.knn_transforms),
        "linear_probe": Evaluation(lambda m, c: cast_evals.evaluate_linear_probe(self, m, c),
                                   self.knn_transforms),
        "figure_ground": Evaluation(lambda m, c: cast_evals.evaluate_figure_ground(self, m, c),
                                    optional_labels),
        "tta": Evaluation(lambda m, c: cast_evals.evaluate_tta(self, m, c), optional_labels),
        "retrieval": Evaluation(lambda m, c: cast_evals.evaluate_retrieval(self, m, c),
                                lambda: self.label_map_transforms(required=True)),
    }

  def encoder_of(self, model) -> cast_lib.CAST:
    """The CAST encoder the evaluations read (MoCo: the online encoder)."""
    return model.encoder

  def _encoder_outputs(self):
    if self._forward is None:

      @nnx.jit
      def forward(model, images, superpixels, mask):
        out = self.encoder_of(model)(images, superpixels, mask)
        return out.embedding, cast_hierarchy.nested_label_maps(superpixels, out.levels)

      self._forward = forward
    return self._forward

  def evaluate_hierarchy(self, model, ctx: "EvalContext") -> dict[str, Any]:
    e = self.config.eval
    thresholds = int(e.get("num_thresholds") or boundary.DEFAULT_NUM_THRESHOLDS)
    scores = {"cast": ucm_evaluation.BsdsUcmScores(thresholds),
              "colour": ucm_evaluation.BsdsUcmScores(thresholds)}
    seconds = {"network": [], "cast_scoring": [], "colour_ucm": []}
    regions_per_level = []
    pictures = []
    for batch in ctx.batches():
      start = time.perf_counter()
      _, nested = jax.block_until_ready(self._encoder_outputs()(
          model, batch["image"], batch["superpixels"], batch["segment_mask"]))
      seconds["network"].append(time.perf_counter() - start)
      values = outputs.to_host({
          "nested": nested, "mask": batch["example_mask"], "original": batch["original"],
          "size": batch["size"], "scaled_size": batch["scaled_size"],
          "truths": batch["truths"], "truth_mask": batch["truth_mask"]})
      for i in np.flatnonzero(values["mask"]):
        height, width = (int(s) for s in values["size"][i])
        sh, sw = (int(s) for s in values["scaled_size"][i])
        levels = segments.resize_labels_nearest(values["nested"][i][:, :sh, :sw], height,
                                                width)
        truths = [t[:height, :width] for t, m in zip(values["truths"][i],
                                                     values["truth_mask"][i]) if m]
        truth_boundaries = [boundary.boundaries_from_segmentation(t) for t in truths]
        start = time.perf_counter()
        ucm = cast_hierarchy.hierarchy_ucm(levels, check_nested=False)  # nested: tested
        ucm2 = np.asarray(grid.interpixel_to_ucm2(ucm))
        scores["cast"].add(ucm2, truths, truth_boundaries,
                           max_distance=float(e.boundary_max_distance))
        seconds["cast_scoring"].append(time.perf_counter() - start)
        regions_per_level.append([len(np.unique(level)) for level in levels])
        start = time.perf_counter()
        image = values["original"][i][:height, :width]
        superpixels = levels[0]
        pairs = adjacent_pairs(superpixels)
        num = int(superpixels.max()) + 1
        colour = baselines.superpixel_colour_dissimilarity(image, superpixels, pairs, num,
                                                             scale=float(e.colour_scale))
        h, v = superpixel_graph.ucm_from_superpixel_graph(
            superpixels, pairs, colour, linkage=str(e.linkage), num_superpixels=num)
        seconds["colour_ucm"].append(time.perf_counter() - start)
        scores["colour"].add(ucm_evaluation.ucm2_from_edges(h, v), truths, truth_boundaries,
                             max_distance=float(e.boundary_max_distance))
        if len(pictures) < int(e.num_pictures):
          pictures.append((image, levels))
    if not regions_per_level:
      raise ValueError(f"cast task: evaluator {ctx.name!r} gave no example")
    scalars: dict[str, float] = {}
    curves = {}
    for name, method in scores.items():
      b, r = method.result()
      curves[name] = b
      metrics = {"boundary_ods": b.ods_f, "boundary_ois": b.ois_f, "boundary_ap": b.ap,
                 "covering_ods": r.covering_ods, "covering_ois": r.covering_ois,
                 "pri_ods": r.pri_ods, "voi_ods": r.voi_ods}
      scalars.update({f"{name}_{k}": float(v) for k, v in metrics.items()})
    for level, count in enumerate(np.mean(regions_per_level, axis=0)):
      scalars[f"regions_level{level}"] = float(count)
    network = seconds["network"][1:] or seconds["network"]  # the first batch compiles
    scalars["seconds_network_per_batch"] = float(np.mean(network))
    scalars["seconds_cast_scoring"] = float(np.mean(seconds["cast_scoring"]))
    scalars["seconds_colour_ucm"] = float(np.mean(seconds["colour_ucm"]))
    if jax.process_index() == 0:
      self._write(ctx.out_dir, ctx.step, scalars, curves, pictures)
    return scalars

  # --- inference on single images (`python -m jhseg.infer`)
  def infer(self, model, image: np.ndarray, out_dir: str, name: str) -> dict[str, str]:
    """The `hierarchy` evaluation's inference on one image of any size, at its size.

    The image is resized by `eval.scale`, over-segmented by SEEDS and padded to
    `eval.image_size` exactly as in the evaluation (so one compiled program serves every
    image that fits; a larger image is padded to a multiple of the stem's stride). Writes
    `<name>_levels.npz` (int32 (H, W) maps S0 = the superpixels,
    S1, ..., S_L, nested), `<name>_ucm.npy` (float (2H-1, 2W-1) interpixel UCM of the
    levels, altitudes l / L+1) and `<name>_levels.png` (the image and each level).
    """
    import matplotlib.image  # pylint: disable=g-import-not-at-top
    geometry = self._geometry()
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    height, width = image.shape[:2]
    sh, sw = geometry.scaled_shape(height, width)
    # Padded to eval.image_size when it fits (one compiled program for all such images),
    # else to the next multiple of the stem's stride (one program per size, as HSG).
    th, tw = (max(size, -(-scaled // cast_lib.STEM_STRIDE) * cast_lib.STEM_STRIDE)
              for size, scaled in zip(geometry.image_size, (sh, sw)))
    scaled = resize_image(image, sh, sw)
    sp, mask = seeds.seeds_superpixels(scaled, self._seeds(geometry.num_superpixels),
                                       max_segments=geometry.num_superpixels)
    _, nested = self._encoder_outputs()(
        model, jnp.asarray(np.pad(normalize(scaled), ((0, th - sh), (0, tw - sw), (0, 0)))[None]),
        jnp.asarray(np.pad(sp, ((0, th - sh), (0, tw - sw)), constant_values=IGNORE)[None]),
        jnp.asarray(mask[None]))
    levels = segments.resize_labels_nearest(np.asarray(nested)[0][:, :sh, :sw], height,
                                            width)
    stem = os.path.join(out_dir, name)
    paths = {"levels": f"{stem}_levels.npz", "ucm": f"{stem}_ucm.npy",
             "pictures": f"{stem}_levels.png"}
    np.savez_compressed(paths["levels"], **{f"S{l}": np.asarray(level, np.int32)
                                            for l, level in enumerate(levels)})
    np.save(paths["ucm"], cast_hierarchy.hierarchy_ucm(levels, check_nested=False))
    matplotlib.image.imsave(paths["pictures"], _level_panels(image, levels))
    return paths

  def _write(self, out_dir, step, scalars, curves, pictures) -> None:
    import matplotlib.image  # pylint: disable=g-import-not-at-top

    outputs.write_boundary_report(
        out_dir, step, scalars, curves,
        labels={"cast": "CAST S_0..S_4", "colour": "SEEDS + LAB colour"},
        title=f"CAST boundary PR, step {step}")
    for k, (image, levels) in enumerate(pictures):
      matplotlib.image.imsave(os.path.join(out_dir, f"{k}_levels.png"),
                              _level_panels(image, levels))

  def features(self, model, batches) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) embeddings (normalised class tokens) and (N,) `label`s of the batches."""
    features, labels = [], []
    for batch in batches:
      embedding, _ = self._encoder_outputs()(model, batch["image"], batch["superpixels"],
                                             batch["segment_mask"])
      values = outputs.to_host({"f": embedding, "label": batch["label"],
                                "mask": batch["example_mask"]})
      keep = np.asarray(values["mask"], bool)
      features.append(values["f"][keep])
      labels.append(values["label"][keep])
    if not features:
      return np.zeros((0, self.cast_config.dim)), np.zeros((0,), np.int64)
    return np.concatenate(features), np.concatenate(labels)

  def train_and_test_features(self, model, ctx: "EvalContext"):
    """Features and labels of `options.train_split` (default: the training split, at most
    `options.num_train_examples`) and of the evaluator's split, and the class count
    (`options.num_classes`, default: the largest label + 1): what k-NN and the probe read."""
    options = ctx.options
    train_split = options.get("train_split") or self.config.data.train_split
    train = self.features(model, ctx.batches(train_split, dataset=ctx.evaluator.dataset,
                                             num_examples=options.get("num_train_examples")))
    test = self.features(model, ctx.batches())
    num_classes = int(options.get("num_classes") or max(train[1].max(), test[1].max()) + 1)
    return train, test, num_classes

  def evaluate_knn(self, model, ctx: "EvalContext") -> dict[str, Any]:
    options = ctx.options
    (train_f, train_y), (test_f, test_y), num_classes = self.train_and_test_features(model, ctx)
    k = int(options.get("k") or knn.KNN_K)
    accuracy = knn.knn_accuracy(train_f, train_y, test_f, test_y, num_classes=num_classes,
                                k=k, temperature=float(options.get("temperature")
                                                      or knn.KNN_TEMPERATURE))
    scalars = {"knn_top1": accuracy, "num_train": float(len(train_y)),
               "num_test": float(len(test_y))}
    outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars,
                                        "k": k, "num_classes": num_classes})
    return scalars


def _level_panels(image: np.ndarray, levels: Sequence[np.ndarray]) -> np.ndarray:
  """The image and each level's segments coloured over it, side by side."""
  from jhseg.viz import segments as viz_segments  # pylint: disable=g-import-not-at-top
  panels = [np.clip(image, 0, 1)] + [viz_segments.colour_segments(level, image=image)
                                     for level in levels]
  return np.concatenate(panels, axis=1)
