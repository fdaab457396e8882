"""DEL (Liu et al., "DEL: Deep Embedding Learning for Efficient Image Segmentation",
IJCAI 2018) as a task of the shared training engine.

Pipeline (Fig. 1): SLIC superpixels (~64 px each, `jhseg.superpixels`) -> the VGG16
multi-side embedding network (`jhseg.models.vgg_del`) -> superpixel mean pooling
(eq. 1, `jhseg.segments.segment_mean`) -> similarity d_ij of adjacent superpixels
(eq. 3) -> training: balanced loss (eq. 4, `jhseg.losses.del_loss`); inference: merging
(Algorithm 1) / the equivalent single-linkage hierarchy on the superpixel graph with
dissimilarity 1 - d_ij, as a UCM (`jhseg.hierarchy.superpixel_graph`).

Data: images and ground truths are first resized by `config.model.input_scale` (1.0 = as
stored; 0.5 in the CPU-sized BSDS500 config). Every evaluation example is padded to
`config.data.image_size`, every training crop to `config.data.augment.crop` (default
image_size) with a `valid` mask; SLIC
runs on the valid rectangle (other pixels get superpixel -1, no segment). Superpixel
ground-truth labels follow the authors' pooling layer (majority segment, purity > 0.7,
else ignored). With several annotators (BSDS500 `segmentations`, K x H x W) training
uses the annotator with the most regions, as the authors' `sort_groundTruth` files do;
evaluation uses all of them.

Evaluation (host, per image, cropped to its valid size): the DEL UCM and, in the same
run, the colour baseline -- the same SLIC superpixels and single-linkage merging on the
mean CIELAB colour of each superpixel with the same similarity form
d = 2 / (1 + exp(||c_i - c_j||_1 / colour_scale)) -- both scored by the BSDS boundary
benchmark (Fb ODS/OIS/AP, `jhseg.metrics.boundary` on the ucm2), the region benchmark's
segmentation covering ODS/OIS (`jhseg.metrics.region`, label 0 is no region as in the
official code) and Fop ODS/OIS
(`jhseg.metrics.fop`), and the time per stage: SLIC (measured in the transform),
network + pooling + similarities (jitted, per image of a batch, the first batch -- which
compiles -- left out when there are several), merging + UCM (host).
Outputs under `workdir/eval/<evaluator>/<step>/`: summary.json, pr_curve.png, and for the first
images <k>_del_ucm.png, <k>_colour_ucm.png, <k>_segments.png (Algorithm 1 at
config.eval.threshold / min_size next to the image).

Faithfulness (deviations and their reasons):
- Superpixels: scikit-image SLIC instead of gSLIC (see `jhseg.superpixels.slic`;
  config.model.superpixels.method = "slic_opencv" selects OpenCV-contrib's SLIC),
  computed in a per-example transform; evaluation images are memoised by the engine's
  per-example cache (config.model.superpixels.cache_entries / cache_dir); augmented
  training views are new every time and are not cached.
- Training augmentation: the paper's flips x 16 rotations with the largest inscribed
  rectangle are drawn at random per example (config.data.augment.num_angles = 16;
  bilinear image, nearest labels) instead of a stored set of 9,600 images, then a random
  crop to at most config.data.augment.crop (fixed shapes: smaller crops are padded).
  num_angles = 4 (the tiny default) uses exact 90-degree rotations only.
- Initialisation: torchvision's ImageNet VGG16 (config.model.pretrained) when given,
  else random; the paper's SBD semantic-segmentation stage is the task
  `del_sbd_pretrain` (`DELSemanticPretrain` below, configs `del.py:sbd_pretrain*`),
  whose run a DEL run starts from with config.init_from (trunk variables by name).
- Learning rates: the embedding layer gets 10x (its bias 20x) and biases 2x as in the
  authors' prototxt, through `config.optim.groups`.
- The UCM is the hierarchy of Algorithm 1's first pass (min_size = 0); the min-size
  second pass is applied to the single segmentation pictured, as the authors sweep it
  separately.
- Algorithm 1's min-size pass visits the pairs sorted by (i, j), i < j
  (`jhseg.segments.segment_adjacency`); the authors visit them by larger id, then in
  pixel-scan discovery order. Only the min-size pass depends on the order.
- Padding (fixed shapes) is invisible: the network takes each example's valid size and
  zeroes every feature map outside it (`vgg_del.VggDel.__call__`), so the embedding of a
  padded image equals that of the image alone (until session 5 the network saw the
  zero padding, a black band that put contours along the padded border of every
  evaluation image); pooling ignores padding.
- Fb thresholds: config.eval.boundary_thresholds (99, the BSDS benchmark's, by default).
- The CPU-sized BSDS500 run (config `bsds500_cpu`, experiments/configs/del.py) departs
  further, for CPU time only: half resolution (model.input_scale 0.5; scored against
  the ground truths resized the same way, nearest), network width 8, Adam 1e-3 from
  random initialisation for 100 steps on 128 x 128 crops, 25 Fb / 24 Fop thresholds.
- `infer` resizes the image by model.input_scale as training did, and draws the UCM
  at the image's own size from the superpixels sampled back by nearest.
"""
from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING, Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from scipy import ndimage

from jhseg import baselines
from jhseg import grid
from jhseg import losses
from jhseg import segments
from jhseg import superpixels as superpixels_lib
from jhseg.data.transforms import random_transform, segmentation_stack
from jhseg.hierarchy import superpixel_graph
from jhseg.metrics import boundary
from jhseg.metrics import fop
from jhseg.metrics import semantic
from jhseg.metrics import ucm_evaluation
from jhseg.models import vgg_del
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Example, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

IGNORE = -1


# ----------------------------------------------------------------------------- transforms


def most_regions(truths: np.ndarray) -> np.ndarray:
  """The annotator with the most regions (the authors' `sort_groundTruth` choice)."""
  counts = [np.unique(t).size for t in truths]
  return truths[int(np.argmax(counts))]


def decode(example: Mapping[str, Any], *, segment_fields,
           no_region: int | None = None) -> Example:
  """image float [0, 1], `truths` (K, H, W) int32, `segments` (H, W) (training target).

  `no_region`: a label that is no segment (PASCAL-Context's unlabelled 0); it becomes
  IGNORE in the training target (its pixels vote for no superpixel label)."""
  if "image" not in example:
    raise ValueError(f"del task: dataset example has no field 'image' (has {sorted(example)})")
  image = np.asarray(example["image"])
  truths = segmentation_stack(
      example, segment_fields, who="del task",
      config_field="config.loss / config.eval segment_fields",
      hint="e.g. 'parts' or 'segmentations'")
  if truths.shape[1:] != image.shape[:2]:
    raise ValueError(f"del task: segmentations {truths.shape} do not match image {image.shape}")
  segments = most_regions(truths)
  if no_region is not None:
    segments = np.where(segments == no_region, IGNORE, segments)
  return {"image": image.astype(np.float32) / 255.0, "truths": truths, "segments": segments}


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """(round(height * scale), round(width * scale)), at least 1 x 1."""
  return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def nearest_indices(source: int, target: int) -> np.ndarray:
  """Source index of each of `target` samples by nearest sampling, floor((i + 1/2) *
  source / target): a resize of labels that invents none (either direction)."""
  return np.minimum(((np.arange(target) + 0.5) * source / target).astype(np.int64), source - 1)


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
  """`image` resized by `scale` by area-averaging (anti-aliased bilinear)."""
  from skimage import transform  # pylint: disable=g-import-not-at-top
  out = scaled_size(*image.shape[:2], scale)
  return transform.resize(image, out, order=1, anti_aliasing=True,
                          preserve_range=True).astype(np.float32)


def rescale(example: Example, scale: float) -> Example:
  """Image and ground truths resized by `scale` (a CPU-sized run's reduced resolution):
  the image by `rescale_image`, the label maps by `nearest_indices`. 1.0 returns
  `example`."""
  if scale == 1.0:
    return example
  if not 0.0 < scale < 1.0:
    raise ValueError(f"del task: config.model.input_scale must be in (0, 1]; got {scale}")
  height, width = example["segments"].shape
  out_h, out_w = scaled_size(height, width, scale)
  rows, cols = nearest_indices(height, out_h), nearest_indices(width, out_w)
  return {**example, "image": rescale_image(example["image"], scale),
          "truths": example["truths"][:, rows][:, :, cols],
          "segments": example["segments"][rows][:, cols]}


@random_transform
def flip_rotate_crop(example: Example, rng: np.random.Generator, *, size) -> Example:
  """Random horizontal flip, rotation by k * 90 degrees, random crop to `size` (<= image)."""
  image, seg = example["image"], example["segments"]
  if rng.random() < 0.5:
    image, seg = image[:, ::-1], seg[:, ::-1]
  k = int(rng.integers(4))
  return _random_crop(np.rot90(image, k), np.rot90(seg, k), size, rng)


def inscribed_size(height: int, width: int, angle: float, *,
                   margin: int = 1) -> tuple[int, int]:
  """(h, w) of the largest axis-aligned rectangle inside a height x width image rotated by
  `angle` radians (centred; the maximal-area one), less `margin` pixels on every side so
  that no resampled pixel at its corners comes from outside the image."""
  sin, cos = abs(math.sin(angle)), abs(math.cos(angle))
  if sin < 1e-9:
    return height, width
  if cos < 1e-9:
    return width, height
  long_side, short_side = max(height, width), min(height, width)
  if short_side <= 2.0 * sin * cos * long_side or abs(sin - cos) < 1e-9:
    # Thin case: two corners of the rectangle touch the rotated image's long sides.
    half = 0.5 * short_side
    along_long, along_short = half / sin, half / cos
    if width >= height:
      w, h = along_long, along_short
    else:
      w, h = along_short, along_long
  else:
    # All four corners touch: solve w cos + h sin = W', w sin + h cos = H'.
    cos2 = cos * cos - sin * sin
    w, h = (width * cos - height * sin) / cos2, (height * cos - width * sin) / cos2
  return (max(1, int(math.floor(h)) - 2 * margin), max(1, int(math.floor(w)) - 2 * margin))


@random_transform
def rotate_flip_inscribed(example: Example, rng: np.random.Generator, *, size,
                          num_angles: int) -> Example:
  """DEL's BSDS500 augmentation (Sec. 2.5): a random flip and one of `num_angles` rotations
  (16), then the largest inscribed rectangle, then a random crop to at most `size`."""
  image, seg = example["image"], example["segments"]
  if rng.random() < 0.5:
    image, seg = image[:, ::-1], seg[:, ::-1]
  degrees = 360.0 * int(rng.integers(num_angles)) / num_angles
  height, width = seg.shape
  if degrees % 90:
    image = ndimage.rotate(image, degrees, axes=(1, 0), reshape=True, order=1)
    seg = ndimage.rotate(seg, degrees, axes=(1, 0), reshape=True, order=0)
    ih, iw = inscribed_size(height, width, math.radians(degrees))
    top, left = (seg.shape[0] - ih) // 2, (seg.shape[1] - iw) // 2
    image, seg = image[top:top + ih, left:left + iw], seg[top:top + ih, left:left + iw]
  else:
    image, seg = np.rot90(image, int(degrees) // 90), np.rot90(seg, int(degrees) // 90)
  return _random_crop(np.clip(image, 0.0, 1.0), seg, size, rng)


def _random_crop(image, seg, size, rng) -> Example:
  height, width = seg.shape
  th, tw = min(size[0], height), min(size[1], width)
  top, left = int(rng.integers(height - th + 1)), int(rng.integers(width - tw + 1))
  seg = np.ascontiguousarray(seg[top:top + th, left:left + tw])
  return {"image": np.ascontiguousarray(image[top:top + th, left:left + tw]),
          "segments": seg, "truths": seg[None]}


def pad_example(example: Example, size, *, max_superpixels: int, purity: float,
                max_truths: int | None = None) -> Example:
  """Pads to `size`, adds `valid`, `size`, and the superpixels' labels (needs `superpixels`)."""
  height, width = example["image"].shape[:2]
  target = tuple(int(s) for s in size)
  if height > target[0] or width > target[1]:
    raise ValueError(f"del task: an image of {height}x{width} does not fit "
                     f"config.data.image_size={target}; raise it")
  ph, pw = target[0] - height, target[1] - width
  sp = example["superpixels"]
  out = {
      "image": np.pad(example["image"], ((0, ph), (0, pw), (0, 0))),
      "valid": np.pad(np.ones((height, width), bool), ((0, ph), (0, pw))),
      "size": np.array([height, width], np.int32),
      "superpixels": np.pad(sp, ((0, ph), (0, pw)), constant_values=IGNORE),
      "superpixel_mask": example["superpixel_mask"],
      "superpixel_labels": superpixels_lib.superpixel_segment_labels(
          sp, example["segments"], num_superpixels=max_superpixels, purity=purity),
      "superpixel_seconds": np.float32(example.get("superpixel_seconds", 0.0)),
  }
  if max_truths is not None:
    truths = example["truths"]
    if truths.shape[0] > max_truths:
      raise ValueError(f"del task: an image has {truths.shape[0]} ground truths, more than "
                       f"config.eval.max_truths={max_truths}")
    out["truths"] = np.pad(truths, ((0, max_truths - truths.shape[0]), (0, ph), (0, pw)),
                           constant_values=IGNORE)
    out["truth_mask"] = np.arange(max_truths) < truths.shape[0]
  return out


def slic_transform(config: ml_collections.ConfigDict, *, cached: bool):
  """SLIC transform recording its time in `superpixel_seconds`; memoised per image when
  `cached` (evaluation: the same images at every evaluation step)."""
  s = config.model.superpixels
  return superpixels_lib.make_slic_transform(
      max_superpixels=int(s.max_superpixels), pixels_per_superpixel=s.pixels_per_superpixel,
      compactness=s.compactness, cache_entries=int(s.get("cache_entries", 0)) if cached else 0,
      cache_dir=str(s.get("cache_dir") or "") if cached else "",
      method=str(s.get("method") or "slic"))


# ----------------------------------------------------------------------------- jitted pieces


def superpixel_graph_of(embedding: jax.Array, superpixels: jax.Array, num_superpixels: int):
  """Pooled embeddings (eq. 1), adjacent pairs and their similarities (eq. 3)."""
  means, _ = segments.segment_mean(embedding, superpixels, num_superpixels)
  pairs, pair_mask = segments.segment_adjacency(superpixels, num_superpixels,
                                                3 * num_superpixels)
  return means, pairs, pair_mask, losses.pair_similarities(means, pairs)


class _Method:
  """The BSDS boundary and region benchmarks plus Fop of one method's UCMs."""

  def __init__(self, thresholds, boundary_thresholds: int):
    # Segmentation covering (BSDS region benchmark) at the same thresholds as Fb.
    self.bsds = ucm_evaluation.BsdsUcmScores(boundary_thresholds)
    self.fop = fop.FopAccumulator(thresholds=thresholds)

  def add(self, h, v, truths, truth_boundaries, max_distance):
    self.bsds.add(ucm_evaluation.ucm2_from_edges(h, v), truths, truth_boundaries,
                  max_distance=max_distance)
    self.fop.add_hierarchy(h, v, truths)

  def result(self):
    b, r = self.bsds.result()
    f = self.fop.result()
    return b, {"fb_ods": b.ods_f, "fb_ois": b.ois_f, "fb_ap": b.ap,
               "covering_ods": r.covering_ods, "covering_ois": r.covering_ois,
               "fop_ods": f["ods"]["f"], "fop_ois": f["ois"]["f"]}


# ----------------------------------------------------------------------------- the task


class DEL(Task):
  """DEL: embedding of SLIC superpixels trained with eq. 4, merged by single linkage."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    self.num_superpixels = int(config.model.superpixels.max_superpixels)
    self._eval_fn = None

  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    model = vgg_del.VggDel(width=int(m.width), embedding_dim=int(m.embedding_dim), rngs=rngs)
    if m.get("pretrained"):
      vgg_del.load_torchvision_vgg16(model, m.pretrained)
    return model

  # --- data
  def _pad(self, with_truths: bool):
    size = tuple(self.config.data.image_size)
    if not with_truths and self.config.data.augment.get("enabled", True):
      size = self._crop()  # training crops are at most this size: padded to it
    max_truths = int(self.config.eval.max_truths) if with_truths else None
    purity = float(self.config.model.superpixels.purity)
    return lambda e: pad_example(e, size, max_superpixels=self.num_superpixels, purity=purity,
                                 max_truths=max_truths)

  def train_transforms(self):
    fields = tuple(self.config.loss.segment_fields)
    augment_config = self.config.data.augment
    crop = self._crop()

    angles = int(augment_config.get("num_angles") or 4)  # 1: flips only (PASCAL Context)

    @random_transform
    def augment(example, rng):
      if angles == 4:
        return flip_rotate_crop(example, rng, size=crop)
      return rotate_flip_inscribed(example, rng, size=crop, num_angles=angles)

    no_region = self.config.loss.get("no_region")
    steps = [lambda e: decode(e, segment_fields=fields, no_region=no_region), self._rescale]
    if augment_config.get("enabled", True):
      steps.append(augment)
    # Augmented views are new every time: no cache (it would only fill).
    return steps + [slic_transform(self.config, cached=False), self._pad(False)]

  def eval_transforms(self):
    fields = tuple(self.config.eval.segment_fields)
    return [lambda e: decode(e, segment_fields=fields), self._rescale,
            slic_transform(self.config, cached=True), self._pad(True)]

  def _crop(self) -> tuple[int, ...]:
    return tuple(self.config.data.augment.get("crop") or self.config.data.image_size)

  def _rescale(self, example: Example) -> Example:
    return rescale(example, float(self.config.model.get("input_scale") or 1.0))

  # --- training
  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    embedding = model(batch["image"], batch["size"])  # padding does not reach the valid part
    means, pairs, pair_mask, similarity = superpixel_graph_of(
        embedding, batch["superpixels"], self.num_superpixels)
    per_image = losses.similarity_loss(
        means, pairs, pair_mask, batch["superpixel_labels"],
        normalize=bool(self.config.loss.normalize))
    same, known = losses.del_loss.pair_labels(batch["superpixel_labels"], pairs, pair_mask)
    different = known & ~same
    metrics = {
        "similarity_same": jnp.sum(jnp.where(same, similarity, 0)) / jnp.maximum(same.sum(), 1),
        "similarity_different": (jnp.sum(jnp.where(different, similarity, 0))
                                 / jnp.maximum(different.sum(), 1)),
        "alpha": same.sum() / jnp.maximum(known.sum(), 1),
    }
    return jnp.mean(per_image), metrics

  # --- evaluation
  def _similarities(self):
    if self._eval_fn is None:

      @nnx.jit
      def fn(model, images, superpixels, sizes):
        _, pairs, pair_mask, similarity = superpixel_graph_of(
            model(images, sizes), superpixels, self.num_superpixels)
        return pairs, pair_mask, similarity

      self._eval_fn = fn
    return self._eval_fn

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    step = ctx.step
    e = self.config.eval
    thresholds = np.linspace(0.0, 1.0, int(e.num_thresholds) + 2)[1:-1]
    fb_thresholds = int(e.get("boundary_thresholds") or boundary.DEFAULT_NUM_THRESHOLDS)
    methods = {name: _Method(thresholds, fb_thresholds) for name in ("del", "colour")}
    seconds = {"superpixels": [], "boundary_edges": [], "merging_ucm": [], "colour_ucm": []}
    network_per_image = []  # per batch; the first batch includes the jit compilation
    pictures = []
    out_dir = ctx.out_dir
    for batch in ctx.batches():
      start = time.perf_counter()
      result = jax.block_until_ready(self._similarities()(
          model, batch["image"], batch["superpixels"], batch["size"]))
      network_per_image.append((time.perf_counter() - start) / len(batch["example_mask"]))
      values = outputs.to_host({"pairs": result[0], "pair_mask": result[1], "d": result[2],
                                "mask": batch["example_mask"], "image": batch["image"],
                                "superpixels": batch["superpixels"], "size": batch["size"],
                                "truths": batch["truths"], "truth_mask": batch["truth_mask"],
                                "slic": batch["superpixel_seconds"]})
      real = np.flatnonzero(values["mask"])
      for i in real:
        height, width = (int(s) for s in values["size"][i])
        sp = values["superpixels"][i][:height, :width]
        truths = [t[:height, :width] for t, m in zip(values["truths"][i], values["truth_mask"][i])
                  if m]
        truth_boundaries = [boundary.boundaries_from_segmentation(t) for t in truths]
        pairs, pair_mask = values["pairs"][i], values["pair_mask"][i]
        num = int(sp.max()) + 1
        start = time.perf_counter()
        edges = superpixel_graph.boundary_edges(sp)  # shared by both methods' UCMs
        seconds["boundary_edges"].append(time.perf_counter() - start)
        start = time.perf_counter()
        h, v = superpixel_graph.ucm_from_superpixel_graph(
            sp, pairs, 1.0 - values["d"][i], mask=pair_mask, linkage=e.linkage,
            num_superpixels=num, edges=edges)
        seconds["merging_ucm"].append(time.perf_counter() - start)
        start = time.perf_counter()
        image = values["image"][i][:height, :width]
        colour = baselines.superpixel_colour_dissimilarity(image, sp, pairs, num,
                                                             scale=e.colour_scale)
        ch, cv = superpixel_graph.ucm_from_superpixel_graph(
            sp, pairs, colour, mask=pair_mask, linkage=e.linkage, num_superpixels=num,
            edges=edges)
        seconds["colour_ucm"].append(time.perf_counter() - start)
        seconds["superpixels"].append(float(values["slic"][i]))
        methods["del"].add(h, v, truths, truth_boundaries, e.boundary_max_distance)
        methods["colour"].add(ch, cv, truths, truth_boundaries, e.boundary_max_distance)
        if len(pictures) < int(e.num_pictures):
          regions = superpixel_graph.merge_superpixels(
              num, pairs, 1.0 - values["d"][i], mask=pair_mask, threshold=float(e.threshold),
              min_size=int(e.min_size))
          pictures.append((image, (h, v), (ch, cv), regions[sp]))
    if not seconds["superpixels"]:
      raise ValueError("del task: the evaluation split gave no example")
    seconds["network"] = network_per_image[1:] or network_per_image
    scalars: dict[str, float] = {}
    curves = {}
    for name, method in methods.items():
      bdry, metrics = method.result()
      curves[name] = bdry
      scalars.update({f"{name}_{k}": float(val) for k, val in metrics.items()})
    scalars.update({f"seconds_{k}": float(np.mean(val)) for k, val in seconds.items()})
    if jax.process_index() == 0:
      self._write(out_dir, step, scalars, curves, pictures)
    return scalars

  def _write(self, out_dir, step, scalars, curves, pictures) -> None:
    from jhseg.viz import segments as viz_segments  # pylint: disable=g-import-not-at-top
    from jhseg.viz import ucm as viz_ucm  # pylint: disable=g-import-not-at-top
    import matplotlib.image  # pylint: disable=g-import-not-at-top

    outputs.write_boundary_report(out_dir, step, scalars, curves,
                                  labels={"del": "DEL", "colour": "SLIC + LAB colour"},
                                  title=f"DEL boundary PR, step {step}")
    for k, (image, (h, v), (ch, cv), regions) in enumerate(pictures):
      viz_ucm.save_ucm_png(os.path.join(out_dir, f"{k}_del_ucm.png"), h, v)
      viz_ucm.save_ucm_png(os.path.join(out_dir, f"{k}_colour_ucm.png"), ch, cv)
      painted = viz_segments.colour_segments(regions, image=image)
      matplotlib.image.imsave(os.path.join(out_dir, f"{k}_segments.png"),
                              np.concatenate([np.clip(image, 0, 1), painted], axis=1))

  # --- inference on single images (`python -m jhseg.infer`)
  def infer(self, model, image: np.ndarray, out_dir: str, name: str) -> dict[str, str]:
    """SLIC -> embedding -> single-linkage UCM of one image of any size, at its size.

    Superpixels and network run on the image resized by config.model.input_scale, as in
    training and evaluation; the superpixels are then sampled back (nearest) to the
    image's size, where the UCM and segmentation are drawn.

    Writes `<name>_ucm.npy` (float32 interpixel map (2H-1, 2W-1), the format of
    `jhseg.grid.edges_to_interpixel`), `<name>_ucm.png` and `<name>_segments.png`
    (Algorithm 1 at config.eval.threshold / min_size, regions in their mean colour).
    """
    from jhseg.viz import segments as viz_segments  # pylint: disable=g-import-not-at-top
    from jhseg.viz import ucm as viz_ucm  # pylint: disable=g-import-not-at-top
    import matplotlib.image  # pylint: disable=g-import-not-at-top

    image = np.asarray(image, np.float32)
    scale = float(self.config.model.get("input_scale") or 1.0)
    if not 0.0 < scale <= 1.0:
      raise ValueError(f"del task: config.model.input_scale must be in (0, 1]; got {scale}")
    small = image if scale == 1.0 else rescale_image(image, scale)  # what the model saw
    s = self.config.model.superpixels
    slic = superpixels_lib.slic.get_slic_method(str(s.get("method") or "slic"))
    sp = slic(small, pixels_per_superpixel=s.pixels_per_superpixel, compactness=s.compactness)
    superpixels_lib.pad_superpixels(sp, self.num_superpixels, what=f"del infer {name}")
    pairs, pair_mask, d = jax.device_get(self._similarities()(
        model, jnp.asarray(small[None]), jnp.asarray(sp[None]),
        jnp.asarray([small.shape[:2]], jnp.int32)))
    # Back to the image's size by nearest sampling: superpixel adjacency is unchanged.
    sp = sp[nearest_indices(sp.shape[0], image.shape[0])][:, nearest_indices(sp.shape[1],
                                                                            image.shape[1])]
    e = self.config.eval
    num = int(sp.max()) + 1
    h, v = superpixel_graph.ucm_from_superpixel_graph(
        sp, pairs[0], 1.0 - d[0], mask=pair_mask[0], linkage=e.linkage, num_superpixels=num)
    regions = superpixel_graph.merge_superpixels(
        num, pairs[0], 1.0 - d[0], mask=pair_mask[0], threshold=float(e.threshold),
        min_size=int(e.min_size))
    stem = os.path.join(out_dir, name)
    paths = {"ucm_array": f"{stem}_ucm.npy", "segments": f"{stem}_segments.png"}
    np.save(paths["ucm_array"], np.asarray(grid.edges_to_interpixel(h, v), np.float32))
    paths["ucm"] = viz_ucm.save_ucm_png(f"{stem}_ucm.png", h, v)
    matplotlib.image.imsave(paths["segments"],
                            viz_segments.colour_segments(regions[sp], image=image))
    return {k: str(p) for k, p in paths.items()}


# ----------------------------------------------------------------------------- SBD pre-training


def decode_semantic(example: Mapping[str, Any], *, label_field: str, num_classes: int,
                    void_label: int) -> Example:
  """image float [0, 1] and the class map (`label_field`) as `segments` / `truths`, with
  `void_label` (VOC's 255) as IGNORE; any other value outside [0, num_classes) fails."""
  for field in ("image", label_field):
    if field not in example:
      raise ValueError(f"del_sbd_pretrain task: dataset example has no field {field!r} (has "
                       f"{sorted(example)}); config.model.label_field names the class map")
  image = np.asarray(example["image"])
  labels = np.asarray(example[label_field]).astype(np.int32)
  if labels.shape != image.shape[:2]:
    raise ValueError(f"del_sbd_pretrain task: {label_field} {labels.shape} does not match "
                     f"image {image.shape}")
  labels = np.where(labels == void_label, IGNORE, labels)
  bad = (labels != IGNORE) & ((labels < 0) | (labels >= num_classes))
  if bad.any():
    raise ValueError(f"del_sbd_pretrain task: {label_field} holds {np.unique(labels[bad])[:5]}"
                     f", outside [0, config.model.num_classes={num_classes}) and not the "
                     f"void label {void_label}")
  return {"image": image.astype(np.float32) / 255.0, "segments": labels, "truths": labels[None]}


@random_transform
def flip_crop(example: Example, rng: np.random.Generator, *, size) -> Example:
  """Random horizontal flip, then a random crop to at most `size`."""
  image, seg = example["image"], example["segments"]
  if rng.random() < 0.5:
    image, seg = image[:, ::-1], seg[:, ::-1]
  return _random_crop(image, seg, size, rng)


def pad_semantic(example: Example, size) -> Example:
  """Pads image (zeros) and labels (IGNORE) to `size`; adds the valid `size`."""
  height, width = example["segments"].shape
  if height > size[0] or width > size[1]:
    raise ValueError(f"del_sbd_pretrain task: an image of {height}x{width} does not fit "
                     f"config.data.image_size={tuple(size)}; raise it")
  ph, pw = size[0] - height, size[1] - width
  return {"image": np.pad(example["image"], ((0, ph), (0, pw), (0, 0))),
          "labels": np.pad(example["segments"], ((0, ph), (0, pw)), constant_values=IGNORE),
          "size": np.array([height, width], np.int32)}


class DELSemanticPretrain(Task):
  """DEL's first stage (Sec. 2.5): the DEL network with a classification layer in place of
  the embedding (`vgg_del.VggDelSemantic`), trained for semantic segmentation (SBD).

  Loss: per-pixel softmax cross-entropy averaged over labelled pixels (void and padding
  ignored). Evaluation: pixel accuracy and mIoU over config.model.num_classes.
  Data: config.model.label_field (voc2012_sbd: 'segmentation', void 255), resized by
  config.model.input_scale as DEL's; training: random flip + crop to
  config.data.augment.crop, padded; evaluation: whole images padded to image_size.
  Faithfulness: the paper gives no settings of this stage (augmentation, schedule); the
  configs use flips and crops and the fine-tuning's SGD settings with a 10x base rate.
  """

  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    m = self.config.model
    model = vgg_del.VggDelSemantic(width=int(m.width), num_classes=int(m.num_classes),
                                   rngs=rngs)
    if m.get("pretrained"):
      vgg_del.load_torchvision_vgg16(model, m.pretrained)
    return model

  def _decode(self, example):
    m = self.config.model
    return decode_semantic(example, label_field=str(m.label_field),
                           num_classes=int(m.num_classes), void_label=int(m.void_label))

  def _rescale(self, example: Example) -> Example:
    return rescale(example, float(self.config.model.get("input_scale") or 1.0))

  def train_transforms(self):
    crop = tuple(self.config.data.augment.get("crop") or self.config.data.image_size)

    @random_transform
    def augment(example, rng):
      return flip_crop(example, rng, size=crop)

    return [self._decode, self._rescale, augment, lambda e: pad_semantic(e, crop)]

  def eval_transforms(self):
    size = tuple(self.config.data.image_size)
    return [self._decode, self._rescale, lambda e: pad_semantic(e, size)]

  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    logits = model(batch["image"], batch["size"])
    labels = batch["labels"]
    known = labels >= 0
    per_pixel = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.where(known, labels, 0))
    count = jnp.maximum(known.sum(), 1)
    loss = jnp.sum(jnp.where(known, per_pixel, 0.0)) / count
    accuracy = jnp.sum(known & (jnp.argmax(logits, -1) == labels)) / count
    return loss, {"pixel_accuracy": accuracy}

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    """Pixel accuracy and mIoU over the labelled pixels; writes summary.json."""
    scalars = semantic.scores_over_batches(_predict_classes, model, ctx.batches(),
                                           num_classes=int(self.config.model.num_classes))
    outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars})
    return scalars


def _predict_classes(model: vgg_del.VggDelSemantic, batch: Batch) -> jax.Array:
  return jnp.argmax(model(batch["image"], batch["size"]), -1)
