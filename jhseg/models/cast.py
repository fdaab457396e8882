"""CAST: a ViT on superpixel tokens with graph pooling (Ke, Mo, Yu, ICLR 2024).

Forward pass (section 3.3, appendix D.1 Alg. 2, Fig. 11):

  X_cnn = ConvStem(I)                      4 x (conv3x3-BN-ReLU), strides 2,2,2,1, widths
                                           D/8, D/4, D/2, D; then a 1x1 conv to D (stride 8)
  X_s   = {mean of X_cnn over superpixel a}  segment tokens on S_0 (labels resized to the
                                           stem grid by nearest neighbour, as the authors)
  Z_0   = [X_class; X_s] + [e_cls; E_pos]   E_pos: a position embedding of the stem grid
                                           averaged per superpixel. `position_embedding`:
                                           "sincos" (MoCo-v3 CAST, `cast_models/cast.py`):
                                           fixed 2-D sin-cos, e_cls = 0; "learned" (DeiT
                                           CAST, `cast_models/cast_deit.py`): a learned
                                           (1, 1 + G*G, D) table, e_cls its row 0, rows
                                           1.. the G x G grid (G = `position_grid`, 28 at
                                           224^2), resized bicubically (PyTorch's kernel,
                                           a = -0.75) when the stem grid is not G x G, as
                                           the authors' `cast_seg_deit.py` does
  for level l = 1..4:
    Z   = Blocks_l(Z)                      pre-norm ViT blocks (timm `Block`)
    Z, P_l = GraphPool_l(Z)                 (jhseg.models.cast_pooling)
  f_class = LayerNorm(class token after Blocks_4)

The fourth pooling only yields the level-4 assignments P_4 (8 regions); its coarse tokens
are unused, and the authors freeze its fc1/fc2/centroid_fc (`frozen_by_authors`).

Sizes (the authors' `cast_models/cast.py`): CAST-S D=384, CAST-B D=768, both 12 heads,
MLP ratio 4, qkv bias, LayerNorm eps 1e-6, depths [3, 3, 3, 2] (the "deep" variants
[6, 3, 3, 3]) and clusters [64, 32, 16, 8]. `CAST_CONFIGS` lists them with a tiny CPU size.

Inputs: images (B, H, W, 3) normalised, H and W multiples of 8; superpixel labels (B, H, W)
int in [0, S) (`jhseg.superpixels.seeds`); segment_mask (B, S) True for the segments
present. A segment with no pixel on the stem grid becomes a padded token.

Faithfulness (deviations and reasons):
  * padded tokens (empty segments or padding slots) are masked out of attention, of
    token means and of pooling (see jhseg.models.cast_pooling); the authors keep empty
    superpixels as zero tokens everywhere, which makes outputs depend on how much
    padding a batch has. Identical when every segment covers a stem cell; on 20 BSDS500
    test images (centre crops at 224^2) 1.1 of the 196 SEEDS superpixels per image (at
    most 4) cover none.
  * the sin-cos embedding is computed for the actual stem grid instead of a table
    fixed at 224/8 = 28 cells, so other image sizes work; at 224 it equals the
    authors' table, including its order (sin/cos of the row index first, then of the
    column, which is what the authors' `meshgrid` produces on the square grid).
  * the learned table is resized to any stem grid; the authors' classification model
    only runs at its table's size (their segmentation model resizes it as here).
  * stem convolutions use PyTorch's default init (uniform with variance 1/(3 fan_in));
    Linear layers xavier-uniform (qkv per q/k/v), zero biases, class token N(0, 1e-12),
    learned position table N(0, 0.02^2), as the authors.
  * FPS runs in float32 (see jhseg.models.cast_pooling).
  * the graph-pooling attention uses the model's head count; the authors' GraphPooling
    always has 12 heads, equal for CAST-S/B (only the tiny CPU size differs).
  * MoCo-v3's `stop_grad_conv1` does nothing here, as in the authors' code: it only
    freezes a `PatchEmbed` projection, and CAST's stem is a ConvStem.

Public API (for the training tasks):
  model = CAST(cast_config("cast_small"), num_classes=None, drop_path_rate=0.0, rngs=...)
  out = model(images, superpixels, segment_mask)      # CASTOutput
  out.embedding (B, D) -> MoCo projector / linear probe; out.logits with num_classes
  out.levels[l].{tokens, mask, logits, assignments, sampled_indices, class_token}
  frozen_by_authors(model)                             # nnx filter of untrained params
  jhseg.models.cast_hierarchy.nested_label_maps(superpixels, out.levels) -> (B, 5, H, W)
  jhseg.models.cast_hierarchy.hierarchy_ucm(nested[b]) -> interpixel UCM (.npy)
  jhseg.models.cast_import.cast_from_checkpoint(config, path, encoder="base"|"momentum"|"deit")
  jhseg.superpixels.seeds.seeds_superpixels_batch(images_uint8) -> (labels, mask)
Dropout (graph pooling's fc1, 0.1) and drop path draw from streams stored in the model
(`rngs`); `model.train()` / `model.eval()` switch them and the stem's BatchNorm.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jhseg import segments
from jhseg.models import cast_pooling
from jhseg.models import layers

STEM_STRIDE = 8
_TORCH_DEFAULT_CONV_INIT = nnx.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform")


@dataclasses.dataclass(frozen=True)
class CASTConfig:
  dim: int
  depths: tuple[int, ...]
  num_heads: int
  num_clusters: tuple[int, ...]
  mlp_ratio: float = 4.0
  position_embedding: str = "sincos"  # POSITION_EMBEDDINGS
  position_grid: int = 224 // STEM_STRIDE  # side of the learned table (the authors': 28)

  def __post_init__(self):
    if self.position_embedding not in POSITION_EMBEDDINGS:
      raise ValueError(f"CASTConfig.position_embedding: unknown {self.position_embedding!r}; "
                       f"valid names: {', '.join(POSITION_EMBEDDINGS)}")
    if self.position_grid < 1:
      raise ValueError(f"CASTConfig.position_grid: expected a positive table side, got "
                       f"{self.position_grid}")


# The embedding added to the segment tokens (averaged per superpixel) and to the class token.
POSITION_EMBEDDINGS = {
    "sincos": "fixed 2-D sin-cos of the stem grid; nothing on the class token (MoCo-v3 CAST)",
    "learned": "a learned (1, 1 + G*G, D) table, row 0 for the class token (DeiT CAST)",
}


CAST_CONFIGS = {
    "cast_small": CASTConfig(384, (3, 3, 3, 2), 12, (64, 32, 16, 8)),
    "cast_small_deep": CASTConfig(384, (6, 3, 3, 3), 12, (64, 32, 16, 8)),
    "cast_base": CASTConfig(768, (3, 3, 3, 2), 12, (64, 32, 16, 8)),
    "cast_base_deep": CASTConfig(768, (6, 3, 3, 3), 12, (64, 32, 16, 8)),
    "cast_tiny": CASTConfig(32, (1, 1, 1, 1), 2, (8, 6, 4, 2)),  # CPU tests only
}


def cast_config(name: str) -> CASTConfig:
  if name not in CAST_CONFIGS:
    raise ValueError(f"unknown CAST size {name!r}; valid names: {', '.join(CAST_CONFIGS)}")
  return CAST_CONFIGS[name]


def sincos_position_embedding(height: int, width: int, dim: int,
                              temperature: float = 10000.0) -> jax.Array:
  """(H, W, D) fixed embedding [sin(r w), cos(r w), sin(c w), cos(c w)], w_k = T^(-k/(D/4))."""
  if dim % 4:
    raise ValueError(f"sincos_position_embedding: dim={dim} must be divisible by 4")
  omega = 1.0 / temperature ** (jnp.arange(dim // 4, dtype=jnp.float32) / (dim // 4))
  rows = jnp.arange(height, dtype=jnp.float32)[:, None, None] * omega
  cols = jnp.arange(width, dtype=jnp.float32)[None, :, None] * omega
  shape = (height, width, dim // 4)
  parts = [jnp.sin(rows), jnp.cos(rows), jnp.sin(cols), jnp.cos(cols)]
  return jnp.concatenate([jnp.broadcast_to(p, shape) for p in parts], axis=-1)


def _torch_cubic_weights(t: np.ndarray) -> np.ndarray:
  """Keys' cubic convolution with a = -0.75 (PyTorch's bicubic) at offsets t-1, t, 1-t, 2-t."""
  a = -0.75
  near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
  far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 < |x| < 2
  return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def bicubic_matrix(size_in: int, size_out: int) -> np.ndarray:
  """(out, in) matrix of 1-D `F.interpolate(mode='bicubic', align_corners=False)` (no
  antialiasing; border indices clamped), as timm / the authors resize a position table."""
  source = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5
  start = np.floor(source)
  weights = _torch_cubic_weights(source - start)
  matrix = np.zeros((size_out, size_in), np.float64)
  for k in range(4):
    index = np.clip(start.astype(np.int64) - 1 + k, 0, size_in - 1)
    np.add.at(matrix, (np.arange(size_out), index), weights[:, k])
  return matrix.astype(np.float32)


def resize_position_table(table: jax.Array, height: int, width: int) -> jax.Array:
  """(h, w, D) -> (height, width, D) by PyTorch's bicubic (the identity when sizes match)."""
  if table.shape[:2] == (height, width):
    return table
  rows = jnp.asarray(bicubic_matrix(table.shape[0], height))
  cols = jnp.asarray(bicubic_matrix(table.shape[1], width))
  return jnp.einsum("ai,bj,ijd->abd", rows, cols, table)


def segment_means(features: jax.Array, labels: jax.Array, num_segments: int
                  ) -> tuple[jax.Array, jax.Array]:
  """Mean feature per segment and whether the segment has any cell.

  features (B, h, w, D), labels (B, h, w) in [0, S) (others ignored) -> (B, S, D)
  (zeros for empty segments) and (B, S) bool non-empty.
  (`jhseg.segments.segment_mean` with the counts as a mask.)
  """
  means, counts = segments.segment_mean(features, labels, num_segments)
  return means, counts > 0


class ConvStem(nnx.Module):
  """Xiao et al. 2021's stem as MoCo-v3/CAST: 4 conv3x3-BN-ReLU (strides 2,2,2,1), 1x1 conv."""

  def __init__(self, dim: int, *, rngs: nnx.Rngs):
    if dim % 8:
      raise ValueError(f"ConvStem: dim={dim} must be divisible by 8")
    widths = [3, dim // 8, dim // 4, dim // 2, dim]
    self.convs = nnx.List([
        nnx.Conv(widths[i], widths[i + 1], (3, 3), strides=2 if i < 3 else 1,
                 padding=((1, 1), (1, 1)), use_bias=False,
                 kernel_init=_TORCH_DEFAULT_CONV_INIT, rngs=rngs) for i in range(4)])
    self.norms = nnx.List([
        nnx.BatchNorm(widths[i + 1], momentum=0.9, epsilon=1e-5, rngs=rngs) for i in range(4)])
    bound = (1.0 / dim) ** 0.5  # PyTorch's default conv bias: U(-1/sqrt(fan_in), ...)
    self.proj = nnx.Conv(dim, dim, (1, 1), kernel_init=_TORCH_DEFAULT_CONV_INIT,
                         bias_init=lambda k, s, d=jnp.float32: jax.random.uniform(
                             k, s, d, -bound, bound),
                         conv_general_dilated=layers.pointwise_conv, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = images
    for conv, norm in zip(self.convs, self.norms):
      x = jax.nn.relu(norm(conv(x)))
    return self.proj(x)


class Mlp(nnx.Module):

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = cast_pooling.linear(dim, hidden, rngs)
    self.fc2 = cast_pooling.linear(hidden, dim, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
  """timm's pre-norm ViT block; drop path = per-sample dropout of the residual branch."""

  def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, *,
               rngs: nnx.Rngs):
    self.norm1 = cast_pooling.layer_norm(dim, 1e-6, rngs)
    self.attn = cast_pooling.Attention(dim, num_heads, rngs=rngs)
    self.norm2 = cast_pooling.layer_norm(dim, 1e-6, rngs)
    self.mlp = Mlp(dim, int(dim * mlp_ratio), rngs=rngs)
    self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2), rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    x = x + self.drop_path(self.attn(self.norm1(x), mask))
    return x + self.drop_path(self.mlp(self.norm2(x)))


class LevelOutput(NamedTuple):
  """Level l = 1..4: the N tokens that pooling l coarsens, and its assignments.

  tokens: (B, N, D) segment tokens after the level's blocks (authors' `block{l}`).
  mask: (B, N) True for valid tokens (level 1: non-empty superpixels; later: all).
  logits: (B, N, K) pooling logits (authors' `logit{l}`).
  assignments: (B, N, K) P_l, zero rows for padded tokens.
  sampled_indices: (B, K) FPS centroids.
  class_token: (B, D) class token after the level's blocks.
  """
  tokens: jax.Array
  mask: jax.Array
  logits: jax.Array
  assignments: jax.Array
  sampled_indices: jax.Array
  class_token: jax.Array


class CASTOutput(NamedTuple):
  """embedding: (B, D) normalised class token f_class; logits: (B, classes) or None."""
  embedding: jax.Array
  logits: jax.Array | None
  levels: tuple[LevelOutput, ...]


class CAST(nnx.Module):
  """CAST encoder (module docstring). `num_classes` adds DeiT's linear head."""

  def __init__(self, config: CASTConfig, *, num_classes: int | None = None,
               drop_path_rate: float = 0.0, pool_dropout: float = cast_pooling.POOL_DROPOUT,
               rngs: nnx.Rngs):
    if len(config.depths) != len(config.num_clusters):
      raise ValueError(f"CAST: depths {config.depths} and num_clusters {config.num_clusters} "
                       f"must have one entry per level")
    self.config = config
    dim = config.dim
    self.patch_embed = ConvStem(dim, rngs=rngs)
    self.cls_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, dim)))
    # timm's trunc_normal_(std=.02) cuts at +-2 absolute (100 std): a plain normal.
    cells = 1 + config.position_grid ** 2
    self.pos_embed = (nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, cells, dim)))
                      if config.position_embedding == "learned" else None)
    rates = np.linspace(0.0, drop_path_rate, sum(config.depths)).tolist()  # timm's rule
    self.stages = nnx.List()
    for depth in config.depths:
      self.stages.append(nnx.List([
          Block(dim, config.num_heads, config.mlp_ratio, rates.pop(0), rngs=rngs)
          for _ in range(depth)]))
    self.pools = nnx.List([
        cast_pooling.GraphPooling(dim, k, num_heads=config.num_heads, dropout=pool_dropout,
                                  rngs=rngs) for k in config.num_clusters])
    self.norm = cast_pooling.layer_norm(dim, 1e-6, rngs)
    self.head = None if num_classes is None else cast_pooling.linear(dim, num_classes, rngs)

  def segment_tokens(self, images: jax.Array, labels: jax.Array, segment_mask: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
    """Z_0 without the class token: (B, S, D) tokens and (B, S) valid mask."""
    b, height, width, _ = images.shape
    if height % STEM_STRIDE or width % STEM_STRIDE:
      raise ValueError(f"CAST: image size {height}x{width} must be a multiple of "
                       f"{STEM_STRIDE} (the stem's stride)")
    if labels.shape != (b, height, width):
      raise ValueError(f"CAST: superpixel labels must have shape {(b, height, width)} "
                       f"(one id per pixel); got {labels.shape}")
    num_segments = segment_mask.shape[1]
    features = self.patch_embed(images)
    grid_labels = segments.resize_labels_nearest(jnp.asarray(labels), *features.shape[1:3])
    # mean(X_cnn) + mean(E_pos) over a superpixel = mean(X_cnn + E_pos): one pooling.
    positions = self.grid_positions(*features.shape[1:3])
    tokens, present = segment_means(features + positions, grid_labels, num_segments)
    return tokens, present & segment_mask

  def grid_positions(self, height: int, width: int) -> jax.Array:
    """(h, w, D) position embedding of the stem grid (`CASTConfig.position_embedding`).

    The learned table's grid part is resized bicubically when the stem grid differs from
    `position_grid` (the authors' segmentation model and DeiT's checkpoint loading)."""
    if self.pos_embed is None:
      with jax.ensure_compile_time_eval():  # a constant of the compiled forward
        return sincos_position_embedding(height, width, self.config.dim)
    side = self.config.position_grid
    table = self.pos_embed[...][0, 1:].reshape(side, side, self.config.dim)
    return resize_position_table(table, height, width)

  def class_position(self) -> jax.Array:
    """(1, 1, D) added to the class token: the learned table's row 0, else zero."""
    if self.pos_embed is None:
      return jnp.zeros((1, 1, self.config.dim), self.cls_token.dtype)
    return self.pos_embed[...][:, :1]

  def __call__(self, images: jax.Array, labels: jax.Array, segment_mask: jax.Array
               ) -> CASTOutput:
    tokens, mask = self.segment_tokens(images, labels, segment_mask)
    b = tokens.shape[0]
    cls = jnp.broadcast_to(self.cls_token[...] + self.class_position(), (b, 1, self.config.dim))
    levels = []
    for index, (stage, pool) in enumerate(zip(self.stages, self.pools)):
      x = jnp.concatenate([cls, tokens], axis=1)
      x_mask = jnp.concatenate([jnp.ones((b, 1), bool), mask], axis=1)
      for block in stage:
        x = block(x, x_mask)
      cls, tokens = x[:, :1], x[:, 1:]
      last = index == len(self.pools) - 1
      pooled = pool(cls, tokens, mask, assign_only=last)
      levels.append(LevelOutput(tokens, mask, pooled.logits, pooled.assignments,
                                pooled.sampled_indices, cls[:, 0]))
      if not last:
        cls, tokens = pooled.class_token, pooled.tokens
        mask = jnp.ones(tokens.shape[:2], bool)
    embedding = self.norm(levels[-1].class_token)
    logits = None if self.head is None else self.head(embedding)
    return CASTOutput(embedding, logits, tuple(levels))


def frozen_by_authors(model: CAST):
  """nnx filter (path, value) -> bool of the parameters the authors do not train.

  The last pooling only provides the level-4 assignments (for the hierarchy); the
  authors set requires_grad=False on its fc1, fc2 and centroid_fc, so those keep their
  initial values. Paths look like ('pools', 3, 'fc1', 'linear', 'kernel').
  """
  return frozen_by_authors_paths(len(model.pools))


def frozen_by_authors_paths(num_levels: int, *, prefix: Sequence = ()):
  """`frozen_by_authors` from the number of levels, for a CAST found at `prefix` inside a
  bigger model (e.g. ('encoder',) in `jhseg.models.cast_moco.MoCoCAST`)."""
  last, prefix = num_levels - 1, tuple(prefix)

  def is_frozen(path: Sequence, value=None) -> bool:
    del value
    path = tuple(path)
    if path[:len(prefix)] != prefix:
      return False
    path = path[len(prefix):]
    return (len(path) >= 3 and path[0] == "pools" and path[1] == last
            and path[2] in ("fc1", "fc2", "centroid_fc"))

  return is_frozen


def cast_model(name: str, *, num_classes: int | None = None, drop_path_rate: float = 0.0,
               rngs: nnx.Rngs) -> CAST:
  """CAST of a named size (`CAST_CONFIGS`)."""
  return CAST(cast_config(name), num_classes=num_classes, drop_path_rate=drop_path_rate,
              rngs=rngs)
