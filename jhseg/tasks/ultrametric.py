"""Ultrametric U-Net (Lapertot, Chierchia, Perret, "Supervised Learning of Hierarchical
Image Segmentation", CIARP 2023) as a task of the shared training engine.

Training: a U-Net (`jhseg.models.unet.UNet`, ResNet encoder) predicts per pixel a
softmax over the hierarchy levels (config.model.levels, {0, 0.5, 1} for HGM,
{0, 1} for the binary BGM targets); edge probabilities are the mean of their
two pixels'; the loss is the balanced cross-entropy of eq. (1)
(`jhseg.losses.balanced_edge_cross_entropy`) against the stored interpixel
target `ucm`, averaged over the images of the batch.

Images of different sizes (Ultrametric Pascal-Part): every example is padded to
the fixed `config.data.image_size` and carries a pixel mask `valid`; the loss
drops every edge touching an invalid pixel (padding, or pixels that an
augmentation rotated in from outside), so padding changes neither the sums nor
the β of eq. (1). One padded shape means one compilation; the published
effective batch of 64 comes from gradient accumulation (config.optim).

Evaluation, inside one jitted function per batch: the predicted dissimilarity of
eq. (2) -> watershed superpixels -> average linkage -> removal of regions under
`config.eval.min_region_area` (30) pixels -> UCM, by the host callback
`jhseg.hierarchy.ucm_from_dissimilarity_jax` under shard_map over the data
mesh. To post-process padded images with fixed shapes, the edges between a valid
and a padding pixel get the dissimilarity `PADDING_SENTINEL` (above any
prediction, which lies in [0, 1]) and the edges inside the padding 0: the
padding becomes one separate basin that average linkage joins only at the very
top, so on the valid edges the UCM is the one of the cropped image (tested
against the NumPy post-processing of the crop), and padding edges are zeroed.

Then, on the host, per image (padding cropped away), `jhseg.metrics.ucm_evaluation`
computes the paper's three metrics (sec. 4) in one pass over the threshold sweep
t = 0, 1/(N+1), ..., 1 (N = `config.eval.num_thresholds`; contours C(t) = edges with
UCM >= t): with `config.eval.object_neighbourhood`, the object-neighbourhood protocol
of sec. 5 for all three; each distinct cut drawn at image resolution as the official
`seg2bdry` and matched once with the BSDS correspondence (0.0075 of the
diagonal) against the target's contours, which gives the boundary PR curves
(ODS/OIS/AP), LRF per level (eq. 3: matched target pixels of each level) and FDF
(eq. 4: unmatched predicted pixels); `config.eval.level_matching = "exact"` counts
LRF/FDF on exactly matching edges instead, and `config.eval.thin_boundaries = True`
thins the maps as the BSDS benchmark (see `jhseg.metrics.ucm_evaluation`). When
instance classes exist, per-class LRF/FDF curves and ODS/OIS/AP on crops around each
instance whose target keeps only the class's boundaries (Fig. 6 and 8).

"Levels recovered in order" (the paper's Fig. 5 reading) is checked by the
scalar `level_order_ok` (1 or 0), defined for the positive levels
a_1 < ... < a_K of the target, with a_0 = 0, mid_k = (a_{k-1} + a_k) / 2 and t_1
the lowest threshold of the sweep:
  (i)   every level is recovered: LRF_{a_k}(t_1) >= 0.25;
  (ii)  every level lasts at least to the middle of its range: its survival
        s_k = max{t : LRF_{a_k}(t) >= LRF_{a_k}(t_1) / 2}
        (`jhseg.metrics.level_recovery.level_survival`, the threshold where it has
        lost half of what the finest cut recovers) is >= mid_k (HGM: parts last to
        t >= 0.25, objects to t >= 0.75);
  (iii) coarser levels outlive finer ones: s_1 < s_2 < ... < s_K.
The survival is relative to LRF(t_1) so that a level recovered only in part still
has one. The target itself gives LRF = 1 at t_1, s_parts = 0.5 and s_objects = 1;
swapped levels or parts lost before t = 0.25 fail.

Outputs under `workdir/eval/<evaluator>/<step>/`: summary.json (all scalars, curves,
per-class tables with ODS/OIS/AP), lrf_fdf.png (Fig. 5 style: LRF solid/dashed per level, FDF
dotted), pr_curve.png (with iso-F lines), ucm_grid.png (image / target UCM /
predicted UCM) and per_class.png.

Faithfulness (deliberate deviations from the paper, with reasons; the evaluation's
own are listed in `jhseg.metrics.level_recovery` and `jhseg.metrics.ucm_evaluation`):
- Verified as the paper: eq. (1) (balanced cross-entropy; its sum is divided by the
  image's number of valid edges, see `jhseg.losses.ultrametric`), eq. (2), the
  post-processing (watershed, average linkage, 30 px area filter), the three metrics
  of sec. 4 with the protocol of sec. 5; the dataset side (stacking rules, weights
  1 / 0.5 / 0, 30 px filter, COB's splits) is in `tfds_builders/ultrametric_pascal_part`.
- Fixed padded image size with a validity mask instead of mini-batches of 1 with 64
  accumulated gradients: one compilation; padding changes neither eq. (1) nor the UCM.
- Weight-0 edges are never contours, also at t = 0 (sec. 4 read literally makes every
  edge a contour at t = 0, where no prediction could have FDF = 0).
- The validation loss for the plateau rule is the mean of eq. (1) over images.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jhseg import grid
from jhseg import hierarchy
from jhseg import losses
from jhseg.data import augment as augment_lib
from jhseg.metrics import boundary
from jhseg.metrics import level_recovery
from jhseg.metrics import ucm_evaluation
from jhseg.models import resnet
from jhseg.models import unet
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Example, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

PADDING_SENTINEL = 2.0  # dissimilarity of valid-padding edges; predictions lie in [0, 1]
NO_CLASS = -1           # padding of `instance_classes`
DEFAULT_LEVEL_NAMES = {(0.5, 1.0): {0.5: "parts", 1.0: "objects"},
                       (1.0,): {1.0: "boundaries"}}


# ----------------------------------------------------------------------------- transforms


def decode(example: Mapping[str, Any], *, with_instances: bool) -> Example:
  """Dataset example -> float image, interpixel target, valid mask (+ instance fields).

  Reads `image` (uint8 HxWx3) and `ucm` (float32 interpixel (2H-1, 2W-1)); with
  `with_instances`, also `instances` (HxW) and the class of each instance: the
  `instance_classes` feature (Ultrametric Pascal-Part: class of instance k at
  [k]) or, for the synthetic scenes, the `object_class` map read at each instance.
  """
  for field in ("image", "ucm"):
    if field not in example:
      raise ValueError(f"ultrametric task: dataset example has no field {field!r} (has "
                       f"{sorted(example)}); expected image (H, W, 3) uint8 and ucm "
                       f"(2H-1, 2W-1) float32")
  image = np.asarray(example["image"])
  ucm = np.asarray(example["ucm"], np.float32)
  height, width = image.shape[:2]
  if image.ndim != 3 or ucm.shape != (2 * height - 1, 2 * width - 1):
    raise ValueError(f"ultrametric task: field 'ucm' has shape {ucm.shape}; expected the "
                     f"interpixel shape (2H-1, 2W-1) = {(2 * height - 1, 2 * width - 1)} of "
                     f"field 'image' {image.shape}")
  out = {"image": image.astype(np.float32) / 255.0, "ucm": ucm,
         "valid": np.ones((height, width), bool)}
  if with_instances:
    if "instances" not in example:
      raise ValueError(f"ultrametric task: the evaluation needs field 'instances' (HxW "
                       f"instance ids, 0 = background); the example has {sorted(example)}")
    instances = np.asarray(example["instances"], np.int32)
    out["instances"] = instances
    out["instance_classes"] = _instance_classes(example, instances)
  return out


def _instance_classes(example: Mapping[str, Any], instances: np.ndarray) -> np.ndarray:
  """Class of instance k at [k] ([0] is background); NO_CLASS when unknown."""
  if "instance_classes" in example:
    return np.asarray(example["instance_classes"], np.int32)
  classes = np.full(int(instances.max()) + 1, NO_CLASS, np.int32)
  if "object_class" in example:
    object_class = np.asarray(example["object_class"])
    ids, first = np.unique(instances.ravel(), return_index=True)
    classes[ids] = object_class.ravel()[first]
  return classes


def pad_example(example: Example, size: Sequence[int] | None, *,
                max_instances: int | None = None) -> Example:
  """Pads to the fixed (H, W) `size` (None: keep the size) and adds `size` (2,) int32.

  image -> 0, ucm -> 0, valid -> False, instances -> 0 (background);
  `instance_classes` is padded with NO_CLASS to `max_instances + 1` entries.
  """
  height, width = example["image"].shape[:2]
  target = (height, width) if size is None else tuple(int(s) for s in size)
  if height > target[0] or width > target[1]:
    raise ValueError(f"ultrametric task: an image of {height}x{width} does not fit "
                     f"config.data.image_size={target}; raise config.data.image_size")
  pad_h, pad_w = target[0] - height, target[1] - width
  out = {"image": np.pad(example["image"], ((0, pad_h), (0, pad_w), (0, 0))),
         "ucm": np.pad(example["ucm"], ((0, 2 * pad_h), (0, 2 * pad_w))),
         "valid": np.pad(example["valid"], ((0, pad_h), (0, pad_w))),
         "size": np.array([height, width], np.int32)}
  if "instances" in example:
    out["instances"] = np.pad(example["instances"], ((0, pad_h), (0, pad_w)))
    classes = example["instance_classes"]
    length = (max_instances or 0) + 1
    if classes.size > length:
      raise ValueError(f"ultrametric task: an image has {classes.size - 1} instances, more "
                       f"than config.eval.max_instances={max_instances}")
    out["instance_classes"] = np.pad(classes, (0, length - classes.size),
                                     constant_values=NO_CLASS)
  return out


# ----------------------------------------------------------------------------- jitted pieces


def edge_masks(valid: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Edges with both pixels valid, from the (B, H, W) pixel mask."""
  return losses.edge_mask_from_pixel_mask(valid)


def per_image_loss(logits: jax.Array, ucm: jax.Array, valid: jax.Array,
                   levels: Sequence[float]) -> jax.Array:
  """(B,) eq. (1) on the valid edges of each image."""
  target_h, target_v = grid.interpixel_to_edges(ucm)
  target = losses.level_indices((target_h, target_v), levels)
  log_probs = losses.edge_level_log_probabilities(logits)
  return losses.balanced_edge_cross_entropy(log_probs, target, mask=edge_masks(valid))


def dissimilarity(logits: jax.Array, levels: Sequence[float]) -> tuple[jax.Array, jax.Array]:
  """Eq. (2): expected level of each edge, (h, v)."""
  edge_probs = losses.edge_level_probabilities(jax.nn.softmax(logits, axis=-1))
  return losses.predicted_dissimilarity(edge_probs, levels)


def pad_dissimilarity(h: jax.Array, v: jax.Array, valid: jax.Array):
  """Valid edges keep h, v; valid-padding edges get PADDING_SENTINEL; padding ones 0."""
  inside_h, inside_v = edge_masks(valid)
  touch_h = valid[:, :, :-1] | valid[:, :, 1:]
  touch_v = valid[:, :-1, :] | valid[:, 1:, :]
  h = jnp.where(inside_h, h, jnp.where(touch_h, PADDING_SENTINEL, 0.0))
  v = jnp.where(inside_v, v, jnp.where(touch_v, PADDING_SENTINEL, 0.0))
  return h, v


def predicted_ucm(h: jax.Array, v: jax.Array, valid: jax.Array, *, min_region_area: float,
                  linkage: str, mesh) -> tuple[jax.Array, jax.Array]:
  """Host-callback UCM of the valid part of each padded image; 0 on padding edges."""
  h, v = pad_dissimilarity(h, v, valid)
  ucm_h, ucm_v = hierarchy.ucm_from_dissimilarity_jax(
      h, v, min_region_area=min_region_area, linkage=linkage, mesh=mesh)
  inside_h, inside_v = edge_masks(valid)
  return jnp.where(inside_h, ucm_h, 0.0), jnp.where(inside_v, ucm_v, 0.0)


# ----------------------------------------------------------------------------- host metrics


def level_order_check(result: Mapping[str, Any], *, floor: float = 0.25) -> dict[str, Any]:
  """The module docstring's `level_order_ok` with the numbers behind it."""
  levels = [float(level) for level in result["levels"]]
  lrf = np.asarray(result["lrf"])
  order = np.argsort(levels)
  survival = level_recovery.level_survival(result)  # the one definition, relative to t_1
  finest, mids = {}, {}
  previous = 0.0
  for index in order:
    level = levels[index]
    finest[level] = float(np.nan_to_num(lrf[index][0], nan=0.0))
    mids[level] = (previous + level) / 2
    previous = level
  ordered = [levels[i] for i in order]
  recovered = all(finest[l] >= floor for l in ordered)
  lasting = all(np.isfinite(survival[l]) and survival[l] >= mids[l] for l in ordered)
  increasing = all(survival[a] < survival[b] for a, b in zip(ordered, ordered[1:]))
  return {"level_order_ok": bool(recovered and lasting and increasing),
          "recovered": recovered, "lasting": lasting, "increasing": increasing,
          "lrf_at_lowest_threshold": {str(l): finest[l] for l in ordered},
          "relative_survival": {str(l): survival[l] for l in ordered},
          "mid_thresholds": {str(l): mids[l] for l in ordered}, "floor": floor}


class _HostEvaluation:
  """Accumulates the per-image metrics of one evaluation on the host."""

  def __init__(self, eval_config: ml_collections.ConfigDict, levels: Sequence[float]):
    self.config = eval_config
    self.levels = tuple(float(l) for l in levels if l > 0)
    self.thresholds = level_recovery.sweep_thresholds(eval_config.num_thresholds)
    self.metrics = ucm_evaluation.UcmEvaluation(
        levels=self.levels, thresholds=self.thresholds, radius=eval_config.neighbourhood_radius,
        max_distance=eval_config.boundary_max_distance,
        level_matching=eval_config.get("level_matching", "bsds"),
        thin=eval_config.get("thin_boundaries", False))
    self.grid_rows: list[tuple[np.ndarray, tuple, tuple]] = []

  def add(self, image, ucm_target, pred_h, pred_v, instances, instance_classes, size) -> None:
    pred_h, pred_v, truth_h, truth_v, instances = ucm_evaluation.crop_padding(
        size, ucm_target, pred_h, pred_v, instances)
    protocol = bool(self.config.object_neighbourhood) and instances.any()
    classes = None
    if protocol and instance_classes is not None:
      classes = {int(k): int(c) for k, c in enumerate(instance_classes)
                 if k > 0 and c != NO_CLASS}
      present = set(np.unique(instances[instances > 0]).tolist())
      if not present <= set(classes):
        classes = None  # classes unknown for some instance: no per-class table
    self.metrics.add(pred_h, pred_v, truth_h, truth_v,
                     instances=instances if protocol else None, instance_classes=classes)
    if len(self.grid_rows) < self.config.num_grid_images:
      height, width = instances.shape
      self.grid_rows.append((image[:height, :width], (truth_h, truth_v), (pred_h, pred_v)))


def _boundary_scalars(result: boundary.BoundaryResult) -> dict[str, float]:
  return {"ods_f": result.ods_f, "ois_f": result.ois_f, "ap": result.ap}


# ----------------------------------------------------------------------------- the task


class UltrametricUNet(Task):
  """Edge-level U-Net trained with eq. (1), evaluated with LRF/FDF and boundary PR."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    levels = tuple(float(l) for l in config.model.levels)
    if len(levels) < 2 or levels[0] != 0.0 or list(levels) != sorted(set(levels)):
      raise ValueError(f"config.model.levels={levels}: expected increasing levels starting "
                       f"at 0, e.g. (0.0, 0.5, 1.0) (HGM) or (0.0, 1.0) (BGM)")
    self.levels = levels
    width = config.model.get("width", resnet.PAPER_WIDTH)
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
      raise ValueError(f"config.model.width={width!r}: expected a positive integer, the "
                       f"encoder's base width ({resnet.PAPER_WIDTH} in the paper)")
    self._eval_fns: dict[Any, Any] = {}

  # --- model
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """U-Net of config.model: depth, decoder_features, width (the encoder's base width,
    64 -- the paper's -- when absent) and an optional torchvision `pretrained` file."""
    m = self.config.model
    model = unet.UNet(len(self.levels), depth=m.depth,
                      decoder_features=tuple(m.decoder_features),
                      width=m.get("width", resnet.PAPER_WIDTH), rngs=rngs)
    if m.get("pretrained"):
      from jhseg.models import torchvision_import  # pylint: disable=g-import-not-at-top
      torchvision_import.load_torchvision_resnet(model.encoder, m.pretrained)
    return model

  # --- data
  def _max_instances(self) -> int:
    return int(self.config.eval.max_instances)

  def train_transforms(self):
    size = self.config.data.get("image_size")
    steps = [lambda e: decode(e, with_instances=False)]
    augment = augment_lib.AugmentConfig.from_config(self.config.data.get("augment"))
    if augment.probability > 0:
      steps.append(augment_lib.make_augment(augment))
    steps.append(lambda e: pad_example(e, size))
    return steps

  def eval_transforms(self):
    size = self.config.data.get("image_size")
    max_instances = self._max_instances()
    return [lambda e: decode(e, with_instances=True),
            lambda e: pad_example(e, size, max_instances=max_instances)]

  # --- training
  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx
    logits = model(batch["image"])
    per_image = per_image_loss(logits, batch["ucm"], batch["valid"], self.levels)
    return jnp.mean(per_image), {}

  # --- evaluation
  def _eval_fn(self, mesh, with_ucm: bool):
    """Jitted per-batch evaluation: per-image losses, and the predicted UCM if asked."""
    if (mesh, with_ucm) not in self._eval_fns:

      @nnx.jit
      def eval_step(model, batch):
        logits = model(batch["image"])
        loss = per_image_loss(logits, batch["ucm"], batch["valid"], self.levels)
        if not with_ucm:  # validation loss only (e.g. every epoch, for the plateau rule)
          return loss, None, None
        ucm_h, ucm_v = self._ucm_from_logits(logits, batch["valid"], mesh)
        return loss, ucm_h, ucm_v

      self._eval_fns[mesh, with_ucm] = eval_step
    return self._eval_fns[mesh, with_ucm]

  def _full_metrics_due(self, step: int) -> bool:
    """Hierarchy metrics at every evaluation, or every `eval.hierarchy_every_steps` and last."""
    every = self.config.eval.get("hierarchy_every_steps")
    return not every or step % every == 0 or step >= int(self.config.num_train_steps)

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    full = self._full_metrics_due(ctx.step)
    host = _HostEvaluation(self.config.eval, self.levels) if full else None
    loss_sum, count = 0.0, 0
    for batch in ctx.batches():
      loss, ucm_h, ucm_v = self._eval_fn(ctx.mesh, full)(model, batch)
      fields = {"loss": loss, "mask": batch["example_mask"]}
      if full:
        fields.update(ucm_h=ucm_h, ucm_v=ucm_v, image=batch["image"], ucm=batch["ucm"],
                      instances=batch["instances"], classes=batch["instance_classes"],
                      size=batch["size"])
      values = outputs.to_host(fields)
      real = np.flatnonzero(values["mask"])
      loss_sum += float(np.sum(values["loss"][real]))
      count += real.size
      if full:
        for i in real:
          host.add(values["image"][i], values["ucm"][i], values["ucm_h"][i], values["ucm_v"][i],
                   values["instances"][i], values["classes"][i], values["size"][i])
    if count == 0:
      raise ValueError("ultrametric task: the evaluation split gave no example")
    scalars: dict[str, Any] = {"loss": loss_sum / count}
    if full:
      scalars.update(self._report(host, ctx.out_dir, ctx.step, scalars["loss"]))
    return scalars

  def _level_names(self, levels: Sequence[float]) -> dict[float, str]:
    names = self.config.eval.get("level_names")
    if names:
      return {float(l): n for l, n in zip(levels, names)}
    return DEFAULT_LEVEL_NAMES.get(tuple(levels), {l: f"level{l:g}" for l in levels})

  def _report(self, host: _HostEvaluation, out_dir: str, step: int, loss: float) -> dict:
    """Scalars for the engine; summary.json and PNGs under `out_dir`."""
    from jhseg.viz import curves, grids, pr_curve  # pylint: disable=g-import-not-at-top

    result = host.metrics.result()
    bdry = result["boundary"]
    order = level_order_check(result)
    names = self._level_names(host.levels)
    scalars: dict[str, float] = {}
    for index, level in enumerate(host.levels):
      for t in self.config.eval.report_thresholds:
        scalars[f"lrf_{names[level]}_t{t:g}"] = float(
            np.interp(t, result["thresholds"], result["lrf"][index]))
      scalars[f"survival_{names[level]}"] = order["relative_survival"][str(level)]
    for t in self.config.eval.report_thresholds:
      scalars[f"fdf_t{t:g}"] = float(np.interp(t, result["thresholds"], result["fdf"]))
    scalars["fdf_mean"] = float(np.mean(result["fdf"]))
    scalars.update(ods_f=bdry.ods_f, ois_f=bdry.ois_f, ap=bdry.ap,
                   level_order_ok=float(order["level_order_ok"]))

    if jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      class_names = dict(enumerate(self.config.eval.get("class_names") or ()))
      table = level_recovery.summary(result)
      summary = {
          "step": step, "num_images": result["num_images"], "loss": loss, "scalars": scalars,
          "level_order": order, "levels": {str(l): names[l] for l in host.levels},
          "lrf_fdf": {"thresholds": result["thresholds"], "lrf": result["lrf"],
                      "fdf": result["fdf"]},
          "boundary": {**bdry.summary(), "thresholds": bdry.thresholds,
                       "recall": bdry.recall, "precision": bdry.precision},
          "per_class": {class_names.get(c, str(c)): {
              **t, **_boundary_scalars(result["per_class"][c]["boundary"])}
                        for c, t in table["per_class"].items()},
      }
      outputs.write_summary(out_dir, summary)
      curves.save_lrf_fdf_png(os.path.join(out_dir, "lrf_fdf.png"), result, level_names=names,
                              title=f"LRF / FDF, step {step}")
      pr_curve.save_pr_curve_png(
          os.path.join(out_dir, "pr_curve.png"), {"U-Net": (bdry.recall, bdry.precision)},
          ods_points={"U-Net": (bdry.ods_recall, bdry.ods_precision)},
          title=f"Boundary PR (object neighbourhood), step {step}")
      if host.grid_rows:
        images, targets, predictions = zip(*host.grid_rows)
        grids.save_ucm_grid_png(os.path.join(out_dir, "ucm_grid.png"), images, targets,
                                predictions)
      if result["per_class"]:
        curves.save_per_class_png(os.path.join(out_dir, "per_class.png"), result,
                                  class_names=class_names, level_names=names)
    return scalars

  def _ucm_from_logits(self, logits, valid, mesh):
    """The evaluation's hierarchy: eq. (2) dissimilarity, then `predicted_ucm`."""
    h, v = dissimilarity(logits, self.levels)
    e = self.config.eval
    return predicted_ucm(h, v, valid, min_region_area=e.min_region_area, linkage=e.linkage,
                         mesh=mesh)

  # --- inference on single images (`python -m jhseg.infer`)
  def _infer_ucm_fn(self):
    """Jitted image -> UCM of the evaluation: eq. (2), watershed, linkage, area filter."""
    if getattr(self, "_infer_fn", None) is None:

      @nnx.jit
      def infer_ucm(model, images, valid):
        return self._ucm_from_logits(model(images), valid, None)

      self._infer_fn = infer_ucm
    return self._infer_fn

  def infer(self, model, image: np.ndarray, out_dir: str, name: str) -> dict[str, str]:
    """The evaluation's predicted UCM of one image of any size, at its size.

    Writes `<name>_ucm.npy`: the UCM as a float32 interpixel map (2H-1, 2W-1), the
    format of the datasets' `ucm` targets (`jhseg.grid.edges_to_interpixel`: edge
    values at odd positions, corners the max of their edges, pixels 0; the BSDS
    ucm2 frame is `jhseg.grid.interpixel_to_ucm2`); `<name>_ucm.png` (that map,
    white = 0) and `<name>_cuts.png`: the cut midway below each positive level of
    config.model.levels (e.g. 0.25 -> parts, 0.75 -> objects for {0, 0.5, 1}).
    No padding: the U-Net takes any size, and the jitted function compiles once
    per image size.
    """
    from jhseg.viz import segments as viz_segments  # pylint: disable=g-import-not-at-top
    from jhseg.viz import ucm as viz_ucm  # pylint: disable=g-import-not-at-top

    image = np.asarray(image, np.float32)
    valid = jnp.ones((1,) + image.shape[:2], bool)
    ucm_h, ucm_v = jax.device_get(self._infer_ucm_fn()(model, jnp.asarray(image[None]), valid))
    h, v = np.asarray(ucm_h[0], np.float32), np.asarray(ucm_v[0], np.float32)
    stem = os.path.join(out_dir, name)
    paths = {"ucm_array": f"{stem}_ucm.npy"}
    np.save(paths["ucm_array"], np.asarray(grid.edges_to_interpixel(h, v), np.float32))
    paths["ucm"] = viz_ucm.save_ucm_png(f"{stem}_ucm.png", h, v)
    positive = [l for l in self.levels if l > 0]
    below = [0.0] + positive[:-1]
    thresholds = [(a + b) / 2 for a, b in zip(below, positive)]
    names = self._level_names(positive)
    paths["cuts"] = viz_segments.save_hierarchy_levels_png(
        f"{stem}_cuts.png", image, h, v, thresholds,
        titles=[f"{names[l]}, t = {t:g}" for l, t in zip(positive, thresholds)])
    return {k: str(p) for k, p in paths.items()}
