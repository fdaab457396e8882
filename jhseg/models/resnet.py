"""ResNet encoders (He et al., CVPR 2016) in flax.nnx, NHWC, with DeepLabv3 dilations.

The layout and attribute names follow torchvision's `resnet{18,34,50,101}` (v1.5:
the stride of a bottleneck sits on its 3x3 convolution), so that
`jhseg.models.torchvision_import` can load torchvision's ImageNet weights and the
training engine can address stages by name (`conv1`, `bn1`, `layer1` ... `layer4`,
`fc`).

Dilated variants (Chen et al., "Rethinking Atrous Convolution for Semantic Image
Segmentation", DeepLabv3, 2017) replace the stride of the last stages by a dilation
so that the encoder keeps an output stride of 16 or 8:

  output_stride  stride of (layer2, layer3, layer4)  dilation of (layer2, layer3, layer4)
  32             (2, 2, 2)                            (1, 1, 1)
  16             (2, 2, 1)                            (1, 1, 2)
  8              (2, 1, 1)                            (1, 2, 4)

Base width: the paper networks have `width=64` channels in the stem and the first
stage, doubling at each stage (64, 128, 256, 512; x4 after a bottleneck). `width`
scales all of them (e.g. 16 gives 16, 32, 64, 128) for cheap CPU configurations;
only width 64 has torchvision (ImageNet) weights.

Inside a dilated stage the first block keeps the dilation of the previous stage, as in
torchvision's `replace_stride_with_dilation`. DeepLabv3's multi-grid instead gives the
blocks of the last stage the rates `dilation * multi_grid[i]`, e.g. (2, 4, 8) for
output stride 16 and multi_grid (1, 2, 4) (DeepLabv3, section 4.2).

Inputs are expected normalised with ImageNet statistics (`imagenet_normalize`), as
torchvision's weights were trained on.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import NamedTuple, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jhseg.models.layers import pointwise_conv

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's BatchNorm2d defaults: eps 1e-5 and momentum 0.1 on the new batch,
# i.e. flax momentum 0.9 on the running average. (torch accumulates the unbiased batch
# variance, flax the biased one: this only affects training updates, not inference.)
_BN_EPSILON = 1e-5
_BN_MOMENTUM = 0.9
# torchvision initialises convolutions with kaiming_normal_(mode="fan_out", relu).
_CONV_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


@dataclasses.dataclass(frozen=True)
class _Depth:
  block: str  # "basic" (two 3x3 convs) or "bottleneck" (1x1, 3x3, 1x1)
  blocks_per_stage: tuple[int, int, int, int]


RESNET_DEPTHS: dict[int, _Depth] = {
    18: _Depth("basic", (2, 2, 2, 2)),
    34: _Depth("basic", (3, 4, 6, 3)),
    50: _Depth("bottleneck", (3, 4, 6, 3)),
    101: _Depth("bottleneck", (3, 4, 23, 3)),
}

# Which of layer2..layer4 trade their stride for a dilation (torchvision's
# `replace_stride_with_dilation`).
OUTPUT_STRIDES: dict[int, tuple[bool, bool, bool]] = {
    32: (False, False, False),
    16: (False, False, True),
    8: (False, True, True),
}

PAPER_WIDTH = 64  # channels of the stem and first stage in He et al. and torchvision
_STAGE_MULTIPLIERS = (1, 2, 4, 8)  # stage widths as multiples of the base width
_BOTTLENECK_EXPANSION = 4


class ResNetFeatures(NamedTuple):
  """Stage outputs for decoders; strides are for output stride 32.

  c1: after conv1-bn1-relu, stride 2, `width` channels (before the max-pool).
  c2..c5: outputs of layer1..layer4, strides 4, 8, 16, 32 (fewer when dilated), with
    (1, 2, 4, 8) x width channels for ResNet-18/34 and (4, 8, 16, 32) x width for
    50/101: 64, 128, 256, 512 and 256, 512, 1024, 2048 at the paper width 64.
  `ResNet.stage_features` gives these channel counts.
  """
  c1: jax.Array
  c2: jax.Array
  c3: jax.Array
  c4: jax.Array
  c5: jax.Array


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """Maps float images in [0, 1], NHWC RGB, to torchvision's ImageNet normalisation."""
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (images - mean) / std


def _conv(in_features, out_features, kernel, *, stride=1, dilation=1, dtype, rngs):
  # Explicit symmetric padding as torch (flax "SAME" pads (2, 3) for stride 2 on even
  # sizes, which would shift features by one pixel against torchvision weights).
  pad = dilation * (kernel - 1) // 2
  conv_fn = {} if kernel != 1 else {"conv_general_dilated": pointwise_conv}
  return nnx.Conv(
      in_features, out_features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
      use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs, **conv_fn)


def _batch_norm(features, *, dtype, rngs):
  return nnx.BatchNorm(
      features, use_running_average=False, momentum=_BN_MOMENTUM,
      epsilon=_BN_EPSILON, dtype=dtype, rngs=rngs)


class Downsample(nnx.Module):
  """1x1 strided projection of the shortcut (torchvision's `downsample.0/1`)."""

  def __init__(self, in_features, out_features, *, stride, dtype, rngs):
    self.conv = _conv(in_features, out_features, 1, stride=stride, dtype=dtype, rngs=rngs)
    self.bn = _batch_norm(out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""
  expansion = 1

  def __init__(self, in_features, width, *, stride, dilation, downsample, dtype, rngs):
    self.conv1 = _conv(in_features, width, 3, stride=stride, dilation=dilation,
                       dtype=dtype, rngs=rngs)
    self.bn1 = _batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(width, width, 3, dilation=dilation, dtype=dtype, rngs=rngs)
    self.bn2 = _batch_norm(width, dtype=dtype, rngs=rngs)
    self.downsample = downsample

  def __call__(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return nnx.relu(y + shortcut)


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided, dilated), 1x1 expand x4, residual (ResNet-50/101)."""
  expansion = _BOTTLENECK_EXPANSION

  def __init__(self, in_features, width, *, stride, dilation, downsample, dtype, rngs):
    out_features = width * self.expansion
    self.conv1 = _conv(in_features, width, 1, dtype=dtype, rngs=rngs)
    self.bn1 = _batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv2 = _conv(width, width, 3, stride=stride, dilation=dilation,
                       dtype=dtype, rngs=rngs)
    self.bn2 = _batch_norm(width, dtype=dtype, rngs=rngs)
    self.conv3 = _conv(width, out_features, 1, dtype=dtype, rngs=rngs)
    self.bn3 = _batch_norm(out_features, dtype=dtype, rngs=rngs)
    self.downsample = downsample

  def __call__(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return nnx.relu(y + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


def _lookup(table: dict, key, field: str):
  if key not in table:
    raise ValueError(f"ResNet: {field}={key!r} is not supported; valid values: "
                     f"{sorted(table)}")
  return table[key]


def stage_dilations(output_stride: int, num_blocks: Sequence[int],
                    multi_grid: Sequence[int] | None = None
                    ) -> tuple[tuple[int, tuple[int, ...]], ...]:
  """(stride, per-block dilations) of layer1..layer4 for an output stride.

  Follows torchvision's `_make_layer` (the first block of a dilated stage keeps the
  previous dilation) except for the last stage when `multi_grid` is given, whose
  block i gets DeepLabv3's rate `dilation * multi_grid[i]`.
  """
  replace = (False,) + _lookup(OUTPUT_STRIDES, output_stride, "output_stride")
  if multi_grid is not None and len(multi_grid) != num_blocks[-1]:
    raise ValueError(f"ResNet: multi_grid={tuple(multi_grid)} needs one rate per block "
                     f"of layer4, i.e. {num_blocks[-1]} values")
  dilation, stages = 1, []
  for index, (blocks, dilated) in enumerate(zip(num_blocks, replace)):
    previous = dilation
    stride = 1 if index == 0 else 2
    if dilated:
      dilation *= stride
      stride = 1
    rates = (previous,) + (dilation,) * (blocks - 1)
    if index == len(num_blocks) - 1 and multi_grid is not None:
      rates = tuple(dilation * rate for rate in multi_grid)
    stages.append((stride, rates))
  return tuple(stages)


def stage_widths(width: int) -> tuple[int, int, int, int]:
  """Inner widths of layer1..layer4 for a base width: width x (1, 2, 4, 8)."""
  return tuple(width * multiplier for multiplier in _STAGE_MULTIPLIERS)


class ResNet(nnx.Module):
  """ResNet-18/34/50/101 with optional dilation (output stride) and classifier head.

  Attributes mirror torchvision: `conv1`, `bn1`, `layer1`..`layer4` (lists of blocks),
  and `fc` when `num_classes` is set (None for an encoder without classifier).
  `width` is the base width (module docstring); 64 is the paper network.

  Call `model(x)` for the classifier logits (B, num_classes) and `model.features(x)`
  for the stage outputs `ResNetFeatures(c1, ..., c5)`. `x` is NHWC and normalised
  with `imagenet_normalize`. Use `model.train()` / `model.eval()` to switch BatchNorm
  between batch statistics and running averages.
  """

  def __init__(self, depth: int = 50, *, output_stride: int = 32,
               multi_grid: Sequence[int] | None = None,
               num_classes: int | None = None, in_features: int = 3,
               width: int = PAPER_WIDTH, dtype: jnp.dtype | None = None,
               rngs: nnx.Rngs):
    spec = _lookup(RESNET_DEPTHS, depth, "depth")
    block_cls = _BLOCKS[spec.block]
    if isinstance(width, bool) or not isinstance(width, numbers.Integral) or width < 1:
      raise ValueError(f"ResNet: width={width!r} should be a positive integer, the "
                       f"channels of the stem and first stage ({PAPER_WIDTH} in the paper)")
    width = int(width)
    self.depth = depth
    self.width = width
    self.output_stride = output_stride
    self.multi_grid = None if multi_grid is None else tuple(multi_grid)
    self.num_classes = num_classes
    self.in_features = in_features
    self.dtype = dtype
    self.conv1 = nnx.Conv(
        in_features, width, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)),
        use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, rngs=rngs)
    self.bn1 = _batch_norm(width, dtype=dtype, rngs=rngs)
    features = width
    plan = stage_dilations(output_stride, spec.blocks_per_stage, multi_grid)
    stages = []
    for inner, (stride, rates) in zip(stage_widths(width), plan):
      out_features = inner * block_cls.expansion
      blocks = []
      for index, rate in enumerate(rates):
        block_stride = stride if index == 0 else 1
        downsample = None
        if index == 0 and (block_stride != 1 or features != out_features):
          downsample = Downsample(features, out_features, stride=block_stride,
                                  dtype=dtype, rngs=rngs)
        blocks.append(block_cls(features, inner, stride=block_stride, dilation=rate,
                                downsample=downsample, dtype=dtype, rngs=rngs))
        features = out_features
      stages.append(nnx.List(blocks))
    self.layer1, self.layer2, self.layer3, self.layer4 = stages
    self.num_features = features
    self.fc = (None if num_classes is None else
               nnx.Linear(features, num_classes, dtype=dtype, rngs=rngs))

  @property
  def stages(self) -> tuple[nnx.List, nnx.List, nnx.List, nnx.List]:
    return (self.layer1, self.layer2, self.layer3, self.layer4)

  @property
  def stage_features(self) -> tuple[int, int, int, int, int]:
    """Channels of c1..c5: width, then each stage's width x the block expansion."""
    expansion = self.layer1[0].expansion
    return (self.width,) + tuple(inner * expansion for inner in stage_widths(self.width))

  def features(self, x: jax.Array) -> ResNetFeatures:
    c1 = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.max_pool(c1, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    outputs = [c1]
    for stage in self.stages:
      for block in stage:
        y = block(y)
      outputs.append(y)
    return ResNetFeatures(*outputs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.fc is None:
      raise ValueError("ResNet: built with num_classes=None (an encoder); call "
                       "model.features(x) or build it with num_classes set")
    pooled = jnp.mean(self.features(x).c5, axis=(1, 2))
    return self.fc(pooled)


def with_output_stride(model: ResNet, output_stride: int,
                       multi_grid: Sequence[int] | None = None) -> ResNet:
  """The same weights and statistics in a ResNet of another output stride.

  Dilation changes no parameter shape, so DeepLabv3-style models can train at output
  stride 16 and be evaluated at 8 (HSG does so). `multi_grid` defaults to the model's.
  The returned model shares the (immutable) arrays of `model`; it starts in the same
  BatchNorm mode.
  """
  multi_grid = model.multi_grid if multi_grid is None else multi_grid
  other = nnx.eval_shape(lambda: ResNet(
      model.depth, output_stride=output_stride, multi_grid=multi_grid,
      num_classes=model.num_classes, in_features=model.in_features, width=model.width,
      dtype=model.dtype, rngs=nnx.Rngs(0)))
  nnx.update(other, nnx.state(model))
  other.set_attributes(use_running_average=model.bn1.use_running_average)
  return other
