"""HSG (Ke et al., "Unsupervised Hierarchical Semantic Segmentation with Multiview
Cosegmentation and Clustering Transformers", CVPR 2022) as a task of the training engine.

Model (`HSGNetwork`): the pixel embedding network (`jhseg.models.embedding`, FCN- or
PSPNet-ResNet, unit embeddings), the clustering transformers
(`jhseg.models.clustering_transformer.HierarchicalClustering`, n1 = 8, n2 = 4) and
their learned position table (`model.transformer.position_embedding`).

Data (training): per image, the coherent regions G_e (`jhseg.data.coherent_regions`,
once per image) and V augmented views carrying them (`jhseg.data.multiview`): fields
`views` (V, S, S, 3) and `view_regions` (V, S, S), -1 outside the image.

Loss (eq. 9), for a batch of B images x V views:
  1. embeddings v of the B V views (BatchNorm statistics over all of them);
  2. G_e resized to the embedding grid by nearest neighbour (as the authors' code);
  3. G0 = spherical k-means (grid initialisation, `model.train_grid`) split by G_e
     (`spherical_kmeans.base_grouping`), at most `model.max_segments` per view;
  4. L_f(G_e) (eq. 3): pixel-to-segment contrast over the G0 segments with label =
     the segment's coherent region, made unique per image, so that positives are
     the segments of the same region in every view of the same image and
     negatives all other segments of the batch;
  5. the clustering transformers run once per image on the G0 prototypes of all
     its views concatenated (X_0, (B, V S0, D)), so that every level's clusters are
     shared by the views, with the learned position of every segment in its own view
     (`jhseg.models.position_embedding`, the mean over its pixels) added to the
     transformers' keys and queries; for each level l: L_f(G_l) with label = the level-l
     cluster of each G0 segment (unique per image), and L_g(l) (eq. 8) with the
     k-NN graph over X_0 (k in each view, or over all views: `loss.knn_per_view`);
  6. L = lambda_E L_f(G_e) + lambda_F sum_l L_f(G_l) + lambda_G sum_l L_g(l).
Choice: L_f(G_l) contrasts pixels with the G0 segment prototypes, labelled by their
level-l cluster (the SegSort form of eq. 3 with segments G0 and grouping G_l).

Evaluation (host-level, `evaluate`): per image at the test output stride, embeddings
resized to the image (the authors' `resize_as_input`), G0 by spherical k-means
(`eval.grid`, no G_e), G1, G2 by the transformers (winner-take-all of P_l, made
nested by `clustering_transformer.nested_labels`), then
  * the UCM of the nested levels {G0, G1, G2} (`hierarchy.
    ultrametric_from_nested_segmentations`, altitudes l / L);
  * NFCovering (`metrics.covering`) of each ground-truth level (`eval.truth_levels`,
    objects = `instances`, parts = `parts` in the synthetic scenes) by each predicted
    level, and the same for a baseline computed in the same run: hierarchical k-means
    on raw colour (`jhseg.baselines.colour_kmeans_hierarchy`) with the same number of
    segments per level;
  * BSDS boundary ODS/OIS/AP (`metrics.boundary`) of the UCM's cuts against the
    boundaries of the finest ground-truth level;
  * segment retrieval (section 4), the authors' inference (`metrics.retrieval`): a
    memory of G0 segment prototypes of `eval.num_memory_examples` images of the
    labelled training split, each labelled with the majority label (`eval.label_field`,
    void included) of its pixels, void-majority segments dropped; every test segment
    takes the unweighted majority class of its `eval.knn` (20) most similar memory
    segments (cosine); mIoU and pixel accuracy (`metrics.semantic.ConfusionMatrix`).
Evaluation "bsds" (`evaluate_bsds`, `config.evals.<name>.method = "bsds"`), for data
with several human segmentations per image and no classes (BSDS500's `segmentations`,
`eval.human_segmentations`): the same inference and colour baseline, scored by the
BSDS500 benchmarks against every annotator, each hierarchy as its list of nested
levels (the official `segs` input): boundary ODS / OIS / AP (`metrics.boundary`) and
covering ODS / OIS / best, PRI, VOI (`metrics.region`), with the boundary F and
covering of each level. No retrieval and no NFCovering (no classes).

Faithfulness (deviations of the task's pipeline; the losses, transformers, retrieval
and configs list their own):
  * in the evaluated hierarchy a G1 group whose base segments disagree on their G2
    winner takes the majority's (`nested_labels`; a UCM needs nested levels);
  * test images are padded to `eval.image_size` and embedded whole (the authors resize
    the longer side to 512 and embed it in crop windows);
  * the retrieval memory can be limited to `eval.num_memory_examples` images (None =
    the whole labelled split, as theirs);
  * the paper evaluates no boundary benchmark and has no BSDS500 setting: the "bsds"
    evaluation and the `bsds500` config are this repository's (the issue asks for HSG's
    hierarchy on real images next to a non-learned baseline); the hierarchy scored is
    G0, G1, G2 only, three segmentations, so its PR curve has three points.
Outputs under `workdir/eval/<evaluator>/<step>/`: summary.json, hierarchy_<i>.png
(segments per level of HSG), baseline_<i>.png (the colour baseline), ucm_<i>.png and
attention_0.png (the first image's last-decoder-layer attention of each level's queries,
painted on its pixels).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jhseg import hierarchy
from jhseg.baselines import colour_kmeans_hierarchy  # the evaluation's reference hierarchy
from jhseg import losses
from jhseg import segments
from jhseg.data import coherent_regions as coherent_lib
from jhseg.data import multiview as multiview_lib
from jhseg.metrics import boundary
from jhseg.metrics import covering
from jhseg.metrics import region
from jhseg.metrics import retrieval
from jhseg.metrics import semantic
from jhseg.models import clustering_transformer as ct
from jhseg.models import embedding as embedding_lib
from jhseg.models import position_embedding as position_lib
from jhseg.models import spherical_kmeans as skm
from jhseg.tasks import outputs
from jhseg.tasks.base import Batch, Evaluation, Example, StepContext, Task

if TYPE_CHECKING:
  from jhseg.train.evaluators import EvalContext

IGNORE = -1


# ----------------------------------------------------------------------------- model


class HSGNetwork(nnx.Module):
  """Pixel embedding network + clustering transformers."""

  def __init__(self, *, embedder: embedding_lib.FCNEmbedding, num_clusters: Sequence[int],
               num_heads: int = 4, num_encoder_layers: int = 2, num_decoder_layers: int = 2,
               dropout: float = 0.1, position_embedding: bool = True,
               authors_code: bool = False, rngs: nnx.Rngs):
    self.embedder = embedder
    # Learned positions of the segments for the transformers' keys and queries (authors'
    # code); None disables them.
    self.position = (position_lib.LearnedPositionEmbedding(embedder.embedding_dim, rngs=rngs)
                     if position_embedding else None)
    self.hierarchy = ct.HierarchicalClustering(
        embedder.embedding_dim, num_clusters=num_clusters, num_heads=num_heads,
        num_encoder_layers=num_encoder_layers, num_decoder_layers=num_decoder_layers,
        dropout=dropout, authors_code=authors_code, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.embedder(images)


def make_network(model: ml_collections.ConfigDict, rngs: nnx.Rngs) -> HSGNetwork:
  options = dict(depth=model.depth, output_stride=model.train_output_stride,
                 multi_grid=model.multi_grid, embedding_dim=model.embedding_dim,
                 upsample=model.get("upsample", 1), width=model.get("width", 64))
  if model.embedding == "pspnet" and model.get("psp_width"):
    options["psp_width"] = model.psp_width
  embedder = embedding_lib.make_embedding(model.embedding, rngs=rngs, **options)
  if model.get("pretrained"):
    from jhseg.models import torchvision_import  # pylint: disable=g-import-not-at-top
    torchvision_import.load_torchvision_resnet(embedder.backbone, model.pretrained)
  t = model.transformer
  return HSGNetwork(embedder=embedder, num_clusters=tuple(model.num_clusters),
                    num_heads=t.num_heads, num_encoder_layers=t.num_encoder_layers,
                    num_decoder_layers=t.num_decoder_layers, dropout=t.dropout,
                    position_embedding=t.get("position_embedding", True),
                    authors_code=t.get("authors_code", False), rngs=rngs)


# ----------------------------------------------------------------------------- transforms


def _evaluation_padding(height: int, width: int, size) -> tuple[tuple[int, int], tuple]:
  """(padded size, np.pad widths) of an evaluation image: `size` (config.eval.image_size)
  or, with None, the image's own size; an image larger than `size` is an error."""
  target = (height, width) if size is None else tuple(int(s) for s in size)
  if height > target[0] or width > target[1]:
    raise ValueError(f"hsg task: an evaluation image of {height}x{width} does not fit "
                     f"config.eval.image_size={target}")
  return target, ((0, target[0] - height), (0, target[1] - width))


def decode_eval(example: Mapping[str, Any], *, truth_levels: Sequence[str], label_field: str,
                size: Sequence[int] | None) -> Example:
  """Float image, ground-truth levels and class map, padded to `size` with a mask.

  The maps are integer (H, W) or (H, W, 1) (TFDS Cityscapes' `segmentation_label`).
  Returns `image` (H, W, 3), `valid` (H, W), `truth` (T, H, W) (padding 0, i.e.
  background), `labels` (H, W) (padding -1) and the original `size` (2,).
  """
  if "image" not in example:
    raise ValueError(f"hsg task: dataset example has no field 'image' (has {sorted(example)})")
  image = coherent_lib.as_float_image(example["image"])
  height, width = image.shape[:2]
  maps = {}
  for name in (*truth_levels, label_field):
    if name not in example:
      raise ValueError(f"hsg task: config.eval needs dataset field {name!r} (an (H, W) "
                       f"integer map); the example has {sorted(example)}")
    value = np.asarray(example[name])
    if value.ndim == 3 and value.shape[-1] == 1:
      value = value[..., 0]
    maps[name] = value
    if value.shape != (height, width) or not np.issubdtype(value.dtype, np.integer):
      raise ValueError(f"hsg task: field {name!r} must be an integer (H, W) = "
                       f"{(height, width)} map like the image; got {value.dtype} {value.shape}")
  _, pad = _evaluation_padding(height, width, size)
  return {
      "image": np.pad(image, pad + ((0, 0),)),
      "valid": np.pad(np.ones((height, width), bool), pad),
      "truth": np.stack([np.pad(maps[n].astype(np.int32), pad) for n in truth_levels]),
      "labels": np.pad(maps[label_field].astype(np.int32), pad, constant_values=IGNORE),
      "size": np.array([height, width], np.int32),
  }


def decode_human_segmentations(example: Mapping[str, Any], *, field: str, max_annotators: int,
                               size: Sequence[int] | None) -> Example:
  """Float image and every annotator's segmentation (BSDS500), padded with masks.

  `field` is an integer (K, H, W) stack of K human segmentations of the image (BSDS500's
  `segmentations`, labels from 1). Returns `image` (H, W, 3), `valid` (H, W), `truths`
  (max_annotators, H, W) (0 = padding, not a region), `truth_mask` (max_annotators,) and
  the original `size` (2,).
  """
  if "image" not in example:
    raise ValueError(f"hsg task: dataset example has no field 'image' (has {sorted(example)})")
  image = coherent_lib.as_float_image(example["image"])
  height, width = image.shape[:2]
  if field not in example:
    raise ValueError(f"hsg task: config.eval.human_segmentations names dataset field {field!r} "
                     f"(a (K, H, W) integer stack); the example has {sorted(example)}")
  truths = np.asarray(example[field])
  if (truths.ndim != 3 or truths.shape[1:] != (height, width)
      or not np.issubdtype(truths.dtype, np.integer)):
    raise ValueError(f"hsg task: field {field!r} must be an integer (K, H, W) stack with (H, W) = "
                     f"{(height, width)} like the image; got {truths.dtype} {truths.shape}")
  if not 1 <= len(truths) <= max_annotators:
    raise ValueError(f"hsg task: field {field!r} has {len(truths)} segmentations; "
                     f"config.eval.max_annotators={max_annotators} allows 1..{max_annotators}")
  target, pad = _evaluation_padding(height, width, size)
  padded = np.zeros((max_annotators,) + target, np.int32)
  padded[:len(truths), :height, :width] = truths
  return {
      "image": np.pad(image, pad + ((0, 0),)),
      "valid": np.pad(np.ones((height, width), bool), pad),
      "truths": padded,
      "truth_mask": np.arange(max_annotators) < len(truths),
      "size": np.array([height, width], np.int32),
  }


def _image_from(example: Mapping[str, Any], field: str) -> Example:
  """The example with its RGB image under `image` (config.data.augment.image_field)."""
  if field not in example:
    raise ValueError(f"hsg task: dataset example has no image field {field!r} "
                     f"(config.data.augment.image_field); fields: {sorted(example)}")
  out = dict(example)
  out["image"] = example[field]
  return out


def _keep_views(example: Example) -> Example:
  return {"views": example["views"], "view_regions": example["view_regions"]}


# ----------------------------------------------------------------------------- loss pieces


def unique_per_image(labels: jax.Array, image_index: jax.Array, num_labels: int) -> jax.Array:
  """label + image * num_labels for labels >= 0 (comparable across the batch), else -1."""
  return jnp.where(labels >= 0, labels + image_index[:, None] * num_labels, IGNORE)


def clusters_used(labels: jax.Array, num_clusters: int) -> jax.Array:
  """Mean number of distinct labels (>= 0) per row of (B, N) int labels."""
  present = jnp.any(jax.nn.one_hot(labels, num_clusters, dtype=jnp.bool_), axis=1)
  return jnp.mean(jnp.sum(present, axis=1).astype(jnp.float32))


def hsg_loss(network: HSGNetwork, views: jax.Array, view_regions: jax.Array, *,
             model: ml_collections.ConfigDict, loss: ml_collections.ConfigDict,
             max_regions: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eq. (9) for a batch of views (B, V, S, S, 3) with regions (B, V, S, S); see module doc."""
  b, v = views.shape[:2]
  flat_views = views.reshape((b * v,) + views.shape[2:])
  emb = network.embedder(flat_views)                                     # (BV, h, w, D)
  bv, h, w, d = emb.shape
  # PyTorch "nearest", as the authors resize labels to the embedding grid.
  regions = segments.resize_labels_nearest(
      view_regions.reshape((bv,) + view_regions.shape[2:]), h, w)
  valid = regions >= 0
  g0 = skm.base_grouping(emb, regions, grid=tuple(model.train_grid),
                         num_iterations=model.kmeans_iterations,
                         max_segments=model.max_segments, mask=valid,
                         location_weight=model.location_weight)
  image_index = jnp.repeat(jnp.arange(b), v)
  pixels = emb.reshape(bv, h * w, d)
  pixel_segments = g0.labels.reshape(bv, h * w)

  def contrast(segment_labels, segment_mask):
    return losses.pixel_segment_contrastive_loss(
        pixels, pixel_segments, g0.prototypes, segment_labels, segment_mask=segment_mask,
        concentration=loss.concentration)

  l_fe = contrast(unique_per_image(g0.region, image_index, max_regions), g0.valid)

  s0 = model.max_segments
  x0 = g0.prototypes.reshape(b, v * s0, d)
  node_mask = g0.valid.reshape(b, v * s0)
  node_view = jnp.broadcast_to(jnp.repeat(jnp.arange(v), s0)[None], (b, v * s0))
  pos = None
  if network.position is not None:  # positions in each view's own embedding grid
    pos = position_lib.segment_positions(network.position(h, w), g0.labels, s0)
    pos = pos.reshape(b, v * s0, d)
  out = network.hierarchy(x0, node_mask, pos)
  level_f, level_g, aux = [], [], {}
  for index, (k, level_labels, assignment, level) in enumerate(zip(
      network.hierarchy.num_clusters, out.labels, out.assignments, out.levels), start=1):
    per_view = level_labels.reshape(bv, s0)
    level_f.append(contrast(unique_per_image(per_view, image_index, k),
                            g0.valid & (per_view >= 0)))
    level_g.append(losses.grouping_loss(
        x0, assignment, level.centroids, node_mask=node_mask,
        node_groups=node_view if loss.get("knn_per_view", True) else None, num_groups=v,
        num_neighbors=loss.num_neighbors, concentration=loss.concentration,
        collapse_normaliser=loss.get("collapse_normaliser", "valid_nodes")))
    aux[f"loss_f_level{index}"] = level_f[-1]
    aux[f"loss_g_level{index}"] = level_g[-1]
    # Distinct clusters used per image: next to eval/segments_hsg_G<l> it shows a level
    # that only separates in training (e.g. by dropout noise) and collapses in evaluation.
    aux[f"clusters_level{index}"] = clusters_used(level_labels, k)
  total = losses.total_loss(coherent_contrastive=l_fe, level_contrastive=level_f,
                            level_grouping=level_g, lambda_e=loss.lambda_e,
                            lambda_f=loss.lambda_f, lambda_g=loss.lambda_g)
  aux["loss_f_coherent"] = l_fe
  aux["base_segments"] = jnp.mean(jnp.sum(g0.valid, axis=1).astype(jnp.float32))
  aux["valid_pixels"] = jnp.mean(valid.astype(jnp.float32))
  return total, aux


# ----------------------------------------------------------------------------- inference


class Segmentation(NamedTuple):
  """Inference output for a batch of B images of H x W pixels.

  levels: (B, L + 1, H, W) int32 pixel labels of G0, G1, ..., G_L (nested), -1 outside
    the valid pixels.
  prototypes: (B, K, D) unit prototypes of the G0 segments.
  segment_valid: (B, K) bool, True for non-empty G0 segments.
  attention: per transformer level l = 1..L, (B, k_l, n_{l-1}) last-decoder-layer
    cross-attention of its queries over its input segments (G0 for l = 1, the G1
    clusters for l = 2, ...), `clustering_transformer.LevelOutput.attention`.
  """
  levels: jax.Array
  prototypes: jax.Array
  segment_valid: jax.Array
  attention: tuple[jax.Array, ...] = ()


def segment_images(embedder: embedding_lib.FCNEmbedding,
                   clustering: ct.HierarchicalClustering, images: jax.Array,
                   valid: jax.Array, *, grid: Sequence[int], num_iterations: int,
                   location_weight: float,
                   position: position_lib.LearnedPositionEmbedding | None = None,
                   position_stride: float = 8.0) -> Segmentation:
  """HSG inference: embeddings resized to the image, G0 by k-means, G1.. by transformers.

  `position_stride`: pixels per embedding cell in training (training output stride /
  upsampling); segment positions come from that grid resized to the image.
  """
  _, height, width, _ = images.shape
  emb = embedder(images)
  emb = skm.unit_normalize(embedding_lib.resize_bilinear(emb, height, width))
  g0 = skm.base_grouping(emb, None, grid=tuple(grid), num_iterations=num_iterations,
                         mask=valid, location_weight=location_weight)
  pos = None
  if position is not None:
    pixels = position.resized(position_lib.grid_for(height, width, position_stride),
                              height, width)
    pos = position_lib.segment_positions(pixels, g0.labels, g0.prototypes.shape[1])
  out = clustering(g0.prototypes, g0.valid, pos)
  nested = ct.nested_labels(out.labels, clustering.num_clusters)
  levels = [g0.labels] + [ct.pixel_labels(g0.labels, g) for g in nested]
  return Segmentation(jnp.stack(levels, axis=1), g0.prototypes, g0.valid,
                      tuple(level.attention for level in out.levels))




# ----------------------------------------------------------------------------- the task


class HSG(Task):
  """HSG: multiview cosegmentation + clustering transformers (see the module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    num_levels = len(m.num_clusters)
    if num_levels < 1 or list(m.num_clusters) != sorted(m.num_clusters, reverse=True):
      raise ValueError(f"config.model.num_clusters={tuple(m.num_clusters)}: expected decreasing "
                       f"cluster counts per level, e.g. (8, 4)")
    augment = config.data.get("augment") or ml_collections.ConfigDict()
    self.image_field = augment.get("image_field", "image")
    self.coherent = coherent_lib.CoherentRegions.from_config(augment.get("coherent_regions"))
    self.multiview = multiview_lib.MultiviewConfig.from_config(augment.get("multiview"))
    self._infer_fn = None

  # --- model
  def make_model(self, rngs: nnx.Rngs) -> nnx.Module:
    return make_network(self.config.model, rngs)

  # --- data
  def train_transforms(self):
    return [lambda x: _image_from(x, self.image_field), self.coherent,
            multiview_lib.make_multiview(self.multiview), _keep_views]

  def eval_transforms(self):
    e = self.config.eval
    return [lambda x: _image_from(x, self.image_field),
            lambda x: decode_eval(x, truth_levels=tuple(e.truth_levels),
                                  label_field=e.label_field, size=e.get("image_size"))]

  # --- training
  def loss(self, model, batch: Batch, ctx: StepContext):
    del ctx  # dropout: the engine re-keys the model's Rngs from ctx.rng every step
    return hsg_loss(model, batch["views"], batch["view_regions"], model=self.config.model,
                    loss=self.config.loss, max_regions=self.coherent.max_regions)

  # --- evaluation
  def _segment(self, model: HSGNetwork, batch: Batch) -> Segmentation:
    if self._infer_fn is None:
      m = self.config.model

      @nnx.jit
      def infer(embedder, clustering, position, images, valid):
        return segment_images(embedder, clustering, images, valid, grid=self.config.eval.grid,
                              num_iterations=m.kmeans_iterations,
                              location_weight=m.location_weight, position=position,
                              position_stride=m.train_output_stride / m.get("upsample", 1))

      self._infer_fn = infer
    return self._infer_fn(self._eval_embedder, model.hierarchy, model.position, batch["image"],
                          batch["valid"])

  def _memory(self, model: HSGNetwork, ctx: EvalContext) -> tuple[np.ndarray, np.ndarray]:
    """G0 prototypes and majority classes of the labelled images of `eval.memory_split`
    (of the evaluator's dataset)."""
    c, e = self.config, self.config.eval
    features, labels = [], []
    for global_batch in ctx.batches(e.get("memory_split") or c.data.train_split,
                                    num_examples=e.num_memory_examples):
      seg = outputs.to_host(self._segment(model, global_batch))
      mask = outputs.to_host(global_batch["example_mask"])
      classes = outputs.to_host(global_batch["labels"])
      k = seg.prototypes.shape[1]
      for i in np.flatnonzero(mask):
        majority = retrieval.segment_majority_labels(seg.levels[i, 0], classes[i], k,
                                                     e.num_classes)
        rows, row_labels = retrieval.memory_from_segments(seg.prototypes[i],
                                                          seg.segment_valid[i], majority)
        features.append(rows)
        labels.append(row_labels)
    return np.concatenate(features), np.concatenate(labels)

  def evaluate(self, model, ctx: EvalContext) -> dict[str, Any]:
    e = self.config.eval
    self._use_eval_stride(model, rebuild=True)  # parameters changed since the last one
    truth_names = tuple(e.truth_levels)
    num_levels = len(self.config.model.num_clusters) + 1
    hsg_cover = covering.NFCoveringAccumulator(background=0, ignore=e.get("void_label"))
    base_cover = covering.NFCoveringAccumulator(background=0, ignore=e.get("void_label"))
    hsg_bdry, base_bdry = [], []
    confusion = semantic.ConfusionMatrix(e.num_classes, ignore_index=None)
    memory = self._memory(model, ctx)
    num_images = 0
    pictures: list[tuple] = []
    attention_picture = None  # (image, input segment maps, attention) of the first image
    counts = {"hsg": [], "baseline": []}  # distinct segments per image and level
    for batch in ctx.batches():
      seg = outputs.to_host(self._segment(model, batch))
      host = outputs.to_host({k: batch[k] for k in ("image", "truth", "labels", "size",
                                            "example_mask")})
      for i in np.flatnonzero(host["example_mask"]):
        num_images += 1
        height, width = (int(s) for s in host["size"][i])
        levels = [seg.levels[i, l, :height, :width] for l in range(num_levels)]
        truth = [host["truth"][i, t, :height, :width] for t in range(len(truth_names))]
        image = host["image"][i, :height, :width]
        baseline = colour_kmeans_hierarchy(
            image, grid=e.grid, num_clusters=self.config.model.num_clusters,
            iterations=e.baseline_iterations, location_weight=self.config.model.location_weight)
        hsg_cover.add(levels, truth)
        base_cover.add(baseline, truth)
        counts["hsg"].append([len(np.unique(l[l >= 0])) for l in levels])
        counts["baseline"].append([len(np.unique(l)) for l in baseline])
        finest = _finest_truth(truth)
        hsg_bdry.append(boundary.counts_from_segmentations(levels, [finest]))
        base_bdry.append(boundary.counts_from_segmentations(baseline, [finest]))
        classes = retrieval.knn_vote(seg.prototypes[i], *memory, k=e.knn,
                                     num_classes=e.num_classes)
        prediction = np.where(levels[0] >= 0, classes[np.maximum(levels[0], 0)], -1)
        keep = prediction >= 0
        confusion.add(host["labels"][i, :height, :width][keep], prediction[keep])
        if len(pictures) < e.num_pictures:
          pictures.append((image, levels, baseline))
        if attention_picture is None:
          attention_picture = (image, levels[:-1], [a[i] for a in seg.attention])
    if not num_images:
      raise ValueError("hsg task: the evaluation split gave no example")
    return self._report(ctx.out_dir, ctx.step, hsg_cover.result(), base_cover.result(),
                        boundary.collect_boundary_counts(hsg_bdry),
                        boundary.collect_boundary_counts(base_bdry), confusion.result(),
                        pictures, truth_names, memory_size=len(memory[1]),
                        segment_counts={k: np.mean(v, axis=0) for k, v in counts.items()},
                        attention_picture=attention_picture)

  # --- evaluation against several human segmentations (BSDS500)
  def evaluations(self) -> dict[str, Evaluation]:
    """"default" (`evaluate`: ground-truth levels, NFCovering, retrieval) and "bsds"
    (`evaluate_bsds`: the BSDS500 boundary and region benchmarks)."""
    return {"default": Evaluation(self.evaluate, self.eval_transforms),
            "bsds": Evaluation(self.evaluate_bsds, self.bsds_transforms)}

  def bsds_transforms(self):
    e = self.config.eval
    if not e.get("human_segmentations"):
      raise ValueError("hsg task: the 'bsds' evaluation needs config.eval.human_segmentations "
                       "(the dataset's (K, H, W) field of human segmentations, e.g. "
                       "'segmentations' of bsds500)")
    return [lambda x: _image_from(x, self.image_field),
            lambda x: decode_human_segmentations(
                x, field=e.human_segmentations, max_annotators=int(e.max_annotators),
                size=e.get("image_size"))]

  def evaluate_bsds(self, model, ctx: EvalContext) -> dict[str, Any]:
    """The BSDS500 benchmarks of HSG's nested levels G0..G_L and of the colour k-means
    hierarchy (`colour_kmeans_hierarchy`, same grid and cluster counts) on the same images.

    Each hierarchy is scored as a list of segmentations, finest first (the official
    benchmark's `segs` input, thresholds 1..L+1), against every annotator: boundary
    ODS / OIS / AP (`metrics.boundary`, tolerance 0.0075 of the diagonal) and segmentation
    covering ODS / OIS / best, PRI and VOI (`metrics.region`); per level, the boundary F
    and the covering of that level. Outputs under `ctx.out_dir`: summary.json and, for
    the first `eval.num_pictures` images, hierarchy_<i>.png, baseline_<i>.png, ucm_<i>.png.
    """
    e = self.config.eval
    self._use_eval_stride(model, rebuild=True)
    num_levels = len(self.config.model.num_clusters) + 1
    names = ("hsg", "baseline")
    bdry = {n: [] for n in names}
    regions = {n: [] for n in names}
    counts = {n: [] for n in names}
    pictures: list[tuple] = []
    for batch in ctx.batches():
      seg = outputs.to_host(self._segment(model, batch))
      host = outputs.to_host({k: batch[k] for k in ("image", "truths", "truth_mask", "size",
                                                    "example_mask")})
      for i in np.flatnonzero(host["example_mask"]):
        height, width = (int(s) for s in host["size"][i])
        image = host["image"][i, :height, :width]
        humans = [t[:height, :width] for t, m in zip(host["truths"][i], host["truth_mask"][i])
                  if m]
        human_boundaries = [boundary.boundaries_from_segmentation(t) for t in humans]
        hierarchies = {
            "hsg": [seg.levels[i, l, :height, :width] for l in range(num_levels)],
            "baseline": colour_kmeans_hierarchy(
                image, grid=e.grid, num_clusters=self.config.model.num_clusters,
                iterations=e.baseline_iterations,
                location_weight=self.config.model.location_weight)}
        for name, levels in hierarchies.items():
          bdry[name].append(boundary.counts_from_segmentations(levels, human_boundaries))
          # Labels from 1: the region benchmark reads 0 as "no region" (official code).
          regions[name].append(region.region_counts_from_segmentations(
              [np.asarray(l) + 1 for l in levels], humans))
          counts[name].append([len(np.unique(l)) for l in levels])
        if len(pictures) < e.num_pictures:
          pictures.append((image, hierarchies["hsg"], hierarchies["baseline"]))
    if not counts["hsg"]:
      raise ValueError("hsg task: the evaluation split gave no example")
    scalars: dict[str, float] = {}
    results = {}
    for name in names:
      b = boundary.collect_boundary_counts(bdry[name])
      r = region.collect_region_counts(regions[name])
      results[name] = {"boundary": b.summary(), "region": r.summary(),
                       "boundary_f_per_level": b.f.tolist(),
                       "covering_per_level": r.covering.tolist()}
      scalars.update({f"boundary_{name}_{k}": float(v) for k, v in b.summary().items()})
      scalars.update({f"{name}_{k}": float(v) for k, v in r.summary().items()})
      for l in range(num_levels):
        scalars[f"boundary_{name}_f_G{l}"] = float(b.f[l])
        scalars[f"covering_{name}_G{l}"] = float(r.covering[l])
        scalars[f"segments_{name}_G{l}"] = float(np.mean([c[l] for c in counts[name]]))
    if jax.process_index() == 0:
      os.makedirs(ctx.out_dir, exist_ok=True)
      self._save_pictures(ctx.out_dir, pictures)
      outputs.write_summary(ctx.out_dir, {"step": ctx.step, "scalars": scalars,
                                          "num_images": len(counts["hsg"]), **results})
    return scalars

  def _save_pictures(self, out_dir: str, pictures: Sequence[tuple]) -> None:
    for i, (image, levels, baseline) in enumerate(pictures):
      save_hierarchy_pictures(os.path.join(out_dir, f"hierarchy_{i}.png"), image, levels,
                              title="HSG", ucm_path=os.path.join(out_dir, f"ucm_{i}.png"))
      save_hierarchy_pictures(os.path.join(out_dir, f"baseline_{i}.png"), image, baseline,
                              title="colour k-means")

  def _report(self, out_dir, step, hsg_cover, base_cover, hsg_bdry, base_bdry, retrieval,
              pictures, truth_names, *, memory_size: int,
              segment_counts: Mapping[str, np.ndarray],
              attention_picture: tuple | None = None) -> dict[str, float]:
    scalars: dict[str, float] = {}
    level_names = [f"G{l}" for l in range(hsg_cover["per_level"].shape[1])]
    for name, cover in (("hsg", hsg_cover), ("baseline", base_cover)):
      for t, truth in enumerate(truth_names):
        for l, level in enumerate(level_names):
          scalars[f"nfcovering_{name}_{truth}_{level}"] = float(cover["per_level"][t, l])
        scalars[f"nfcovering_{name}_{truth}_best"] = float(cover["best"][t])
    for name, bdry in (("hsg", hsg_bdry), ("baseline", base_bdry)):
      scalars.update({f"boundary_{name}_{k}": float(v) for k, v in bdry.summary().items()})
    # Mean number of distinct labels per image and level: shows a collapsed level at once.
    for name, mean_counts in segment_counts.items():
      for level, value in zip(level_names, mean_counts):
        scalars[f"segments_{name}_{level}"] = float(value)
    scalars["retrieval_miou"] = float(retrieval["miou"])
    scalars["retrieval_pixel_accuracy"] = float(retrieval["pixel_accuracy"])

    if jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      self._save_pictures(out_dir, pictures)
      if attention_picture is not None:
        image, input_levels, attention = attention_picture
        save_attention_picture(os.path.join(out_dir, "attention_0.png"), image, input_levels,
                               attention)
      summary = {
          "step": step, "scalars": scalars, "truth_levels": list(truth_names),
          "predicted_levels": level_names,
          "nfcovering": {"hsg": hsg_cover, "baseline": base_cover},
          "boundary": {"hsg": hsg_bdry.summary(), "baseline": base_bdry.summary()},
          "retrieval": {**retrieval, "memory_segments": memory_size,
                        "knn": self.config.eval.knn},
      }
      outputs.write_summary(out_dir, summary)
    return scalars

  # --- inference on single images (`python -m jhseg.infer`)
  def _use_eval_stride(self, model: HSGNetwork, *, rebuild: bool = False) -> None:
    """`_segment`'s embedder: `model`'s weights at config.model.eval_output_stride.

    Kept while the same `model` comes back (one per image in `infer`); `rebuild` after
    training changed its weights.
    """
    if rebuild or getattr(self, "_eval_embedder_of", None) is not model:
      self._eval_embedder = embedding_lib.with_output_stride(
          model.embedder, self.config.model.eval_output_stride)
      self._eval_embedder.eval()
      self._eval_embedder_of = model

  def infer(self, model: HSGNetwork, image: np.ndarray, out_dir: str,
            name: str) -> dict[str, str]:
    """The evaluation's inference (`_segment`) on one image of any size, at its size.

    Writes `<name>_levels.npz` (int32 (H, W) maps G0, ..., G_L, nested),
    `<name>_hierarchy.png` (the segments of each level, as `hierarchy_<i>.png`),
    `<name>_ucm.png` (the UCM of the nested levels, altitudes l / L) and
    `<name>_attention.png` (each level's last-decoder-layer attention, as
    `attention_0.png`). No padding: the embedder and k-means take any size, and the
    jitted function compiles once per image size.
    """
    self._use_eval_stride(model)
    image = np.asarray(image, np.float32)
    batch = {"image": jnp.asarray(image[None]),
             "valid": jnp.ones((1,) + image.shape[:2], bool)}
    seg = jax.device_get(self._segment(model, batch))
    levels = [np.asarray(level, np.int32) for level in seg.levels[0]]
    stem = os.path.join(out_dir, name)
    paths = {"levels": f"{stem}_levels.npz", "hierarchy": f"{stem}_hierarchy.png",
             "ucm": f"{stem}_ucm.png", "attention": f"{stem}_attention.png"}
    np.savez_compressed(paths["levels"], **{f"G{l}": level for l, level in enumerate(levels)})
    save_hierarchy_pictures(paths["hierarchy"], image, levels, title="HSG",
                            ucm_path=paths["ucm"])
    save_attention_picture(paths["attention"], image, levels[:-1],
                           [a[0] for a in seg.attention])
    return paths


def _finest_truth(truth_levels: Sequence[np.ndarray]) -> np.ndarray:
  """Boundary map of the common refinement of the ground-truth levels."""
  stacked = np.stack([np.asarray(t) for t in truth_levels]).reshape(len(truth_levels), -1)
  _, joint = np.unique(stacked, axis=1, return_inverse=True)
  return boundary.boundaries_from_segmentation(joint.reshape(truth_levels[0].shape))


def save_hierarchy_pictures(path: str, image: np.ndarray, levels: Sequence[np.ndarray], *,
                            title: str, ucm_path: str | None = None) -> None:
  """Segments of each nested level over the image (PNG at `path`, panels "<title> G<l>")
  and, with `ucm_path`, the UCM of the levels at altitudes l / L."""
  from jhseg.viz import segments as viz_segments  # pylint: disable=g-import-not-at-top
  from jhseg.viz import ucm as viz_ucm  # pylint: disable=g-import-not-at-top

  altitudes, thresholds = level_altitudes_and_cuts(len(levels))
  h, v = hierarchy.ultrametric_from_nested_segmentations(levels, altitudes)
  viz_segments.save_hierarchy_levels_png(path, image, h, v, thresholds,
                                         titles=[f"{title} G{l}" for l in range(len(levels))])
  if ucm_path is not None:
    viz_ucm.save_ucm_png(ucm_path, h, v)


def save_attention_picture(path: str, image: np.ndarray, input_levels: Sequence[np.ndarray],
                           attention: Sequence[np.ndarray]) -> None:
  """Each level's last-decoder-layer attention: level l's queries attend over the
  segments of G_{l-1}, so each is painted on the pixels through that level."""
  from jhseg.viz import attention as viz_attention  # pylint: disable=g-import-not-at-top

  viz_attention.save_attention_png(
      path, input_levels, attention, image=image,
      titles=[f"G{l - 1}->G{l}" for l in range(1, len(attention) + 1)])


def level_altitudes_and_cuts(num_levels: int) -> tuple[np.ndarray, list[float]]:
  """The altitudes k / N (k = 1..N) of `num_levels` = N nested levels for
  `hierarchy.ultrametric_from_nested_segmentations` (as `HSG._report`), and one
  threshold per level whose cut gives that level back (0, then between altitudes)."""
  altitudes = np.arange(1, num_levels + 1) / num_levels
  return altitudes, [0.0] + list(altitudes[:-1] + 0.5 / num_levels)
