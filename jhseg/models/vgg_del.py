"""DEL's embedding network (Liu et al., IJCAI 2018, Sec. 2.3, Fig. 2) in flax.nnx.

VGG16's five convolution stages (Simonyan & Zisserman, 2014) without pool5 and the
fully connected layers; pool4 has stride 1 (3x3 window, padding 1, as the authors'
prototxt) and the conv5 layers are dilated by 2 (the "hole" algorithm) so their
receptive field stays VGG16's. A side branch on the last conv of every stage (conv1_2,
conv2_2, conv3_3, conv4_3, conv5_3): 3x3 conv (32, 64, 128, 256, 256 channels) + ReLU,
1x1 conv (32, 64, 64, 128, 128), L2 normalisation across channels with a learned
per-channel scale initialised to 20 (Liu et al., ParseNet 2016; the authors' Normalize
layer), upsampling to the input size; the five sides are concatenated, fused by a 3x3
conv (256) + ReLU and projected by a 1x1 conv to the 64-d embedding.

`width` scales every channel count by width / 64 (64: the paper's network, which
`load_torchvision_vgg16` can initialise from torchvision's ImageNet VGG16; e.g. 8 for
CPU-sized runs); the embedding keeps `embedding_dim` (64).

Input: RGB images in [0, 1], normalised inside with torchvision's ImageNet mean/std.

Faithfulness:
- Upsampling is bilinear (`jax.image.resize`'s half-pixel centres) from each image's
  valid part to its valid size (`resize_valid`); the authors use fixed bilinear
  deconvolutions (x2, x4, x8, x8) followed by Crop layers, which place the samples up
  to a few pixels differently.
- Max pools 1-3 round the output size down (torchvision), Caffe rounds up: on odd sizes
  (321) the coarse maps differ by one row before upsampling.
- The authors' Caffe model is initialised from their SBD semantic-segmentation
  pre-training of Caffe's VGG16 (BGR, mean subtraction only); we take torchvision's
  VGG16 (RGB, mean/std normalisation). The SBD stage trains `VggDelSemantic` (task
  `del_sbd_pretrain`), whose trunk a DEL run loads through `config.init_from`.
"""
from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

PAPER_WIDTH = 64
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
SIDE_CONV3 = (32, 64, 128, 256, 256)
SIDE_CONV1 = (32, 64, 64, 128, 128)
FUSE_CHANNELS = 256
NORM_SCALE_INIT = 20.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision vgg16().features index of each conv, stage by stage.
TORCHVISION_CONV_INDICES = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))

_XAVIER = nnx.initializers.xavier_uniform()


def _scaled(channels: int, width: int) -> int:
  return max(1, channels * width // PAPER_WIDTH)


def _conv(cin, cout, kernel, *, dilation=1, dtype=None, rngs):
  pad = dilation * (kernel // 2)
  return nnx.Conv(cin, cout, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                  kernel_dilation=(dilation, dilation), kernel_init=_XAVIER,
                  dtype=dtype, rngs=rngs)


class ChannelL2Norm(nnx.Module):
  """x / ||x||_2 over channels, times a learned per-channel scale (ParseNet / SSD)."""

  def __init__(self, channels: int, *, init_scale: float = NORM_SCALE_INIT,
               epsilon: float = 1e-10):
    self.scale = nnx.Param(jnp.full((channels,), init_scale, jnp.float32))
    self.epsilon = epsilon

  def __call__(self, x: jax.Array) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + self.epsilon)
    return x / norm * self.scale[...].astype(x.dtype)


class SideBranch(nnx.Module):
  """3x3 conv + ReLU, 1x1 conv, channel L2 normalisation with scale."""

  def __init__(self, cin: int, mid: int, cout: int, *, dtype=None, rngs: nnx.Rngs):
    self.conv3 = _conv(cin, mid, 3, dtype=dtype, rngs=rngs)
    self.conv1 = _conv(mid, cout, 1, dtype=dtype, rngs=rngs)
    self.norm = ChannelL2Norm(cout)

  def __call__(self, x):
    return self.norm(self.conv1(nnx.relu(self.conv3(x))))


def _max_pool(x, window, stride, pad):
  return nnx.max_pool(x, (window, window), strides=(stride, stride),
                      padding=((pad, pad), (pad, pad)))


class VggDel(nnx.Module):
  """Image (B, H, W, 3) in [0, 1] -> embedding (B, H, W, embedding_dim)."""

  def __init__(self, *, width: int = PAPER_WIDTH, embedding_dim: int = 64, dtype=None,
               rngs: nnx.Rngs):
    self._build_trunk(width, dtype, rngs)
    self.embed = _conv(_scaled(FUSE_CHANNELS, width), embedding_dim, 1, dtype=dtype, rngs=rngs)

  def _build_trunk(self, width, dtype, rngs) -> None:
    """The VGG stages, side branches and fusion conv (everything but the last 1x1 conv)."""
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
      raise ValueError(f"VggDel: width must be a positive integer (64 = the paper's "
                       f"VGG16); got {width!r}")
    self.width = width
    convs, cin = [], 3
    for stage_index, stage in enumerate(STAGES):
      dilation = 2 if stage_index == 4 else 1
      layers = []
      for channels in stage:
        cout = _scaled(channels, width)
        layers.append(_conv(cin, cout, 3, dilation=dilation, dtype=dtype, rngs=rngs))
        cin = cout
      convs.append(nnx.List(layers))
    self.stages = nnx.List(convs)
    self.sides = nnx.List([
        SideBranch(_scaled(stage[-1], width), _scaled(mid, width), _scaled(out, width),
                   dtype=dtype, rngs=rngs)
        for stage, mid, out in zip(STAGES, SIDE_CONV3, SIDE_CONV1)])
    concatenated = sum(_scaled(c, width) for c in SIDE_CONV1)
    self.fuse = _conv(concatenated, _scaled(FUSE_CHANNELS, width), 3, dtype=dtype, rngs=rngs)

  def backbone(self, images: jax.Array, sizes: jax.Array | None = None) -> list[jax.Array]:
    """The post-ReLU outputs of conv1_2, conv2_2, conv3_3, conv4_3, conv5_3.

    With `sizes` ((B, 2) valid height, width of each top-left-anchored image), every
    feature map is zero outside the image's valid rectangle at its level, so the valid
    part equals the network run on the cropped image (see `valid_sizes`)."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    x = (images - mean) / std
    level_sizes = valid_sizes(images.shape, sizes)
    outputs = []
    for index, stage in enumerate(self.stages):
      if index in (1, 2, 3):
        x = _max_pool(x, 2, 2, 0)
      elif index == 4:
        x = _max_pool(x, 3, 1, 1)  # pool4, stride 1; inputs >= 0, so 0 outside = no input
      mask = _mask(x.shape, level_sizes[index])
      for conv in stage:
        x = _masked(nnx.relu(conv(_masked(x, mask))), mask)
      outputs.append(x)
    return outputs

  def side_features(self, images: jax.Array, sizes: jax.Array | None = None) -> jax.Array:
    """Concatenated normalised side outputs at the input resolution (0 outside `sizes`)."""
    batch, height, width = images.shape[:3]
    level_sizes = valid_sizes(images.shape, sizes)
    sides = []
    for feature, side, level in zip(self.backbone(images, sizes), self.sides, level_sizes):
      s = _masked(side(feature), _mask(feature.shape, level))
      if s.shape[1:3] != (height, width):  # side 1 is at full resolution
        s = resize_valid(s, level, level_sizes[0], (height, width))
      sides.append(s)
    return _masked(jnp.concatenate(sides, axis=-1), _mask(images.shape, level_sizes[0]))

  def fused(self, images: jax.Array, sizes: jax.Array | None = None) -> jax.Array:
    """The fusion conv's ReLU output, the input of the last 1x1 conv."""
    return nnx.relu(self.fuse(self.side_features(images, sizes)))

  def __call__(self, images: jax.Array, sizes: jax.Array | None = None) -> jax.Array:
    """Embedding (B, H, W, embedding_dim). `sizes` (B, 2): valid (height, width) of each
    image padded at the bottom and right; the valid part of the result is then the
    embedding of the unpadded image, whatever the padding holds."""
    return self.embed(self.fused(images, sizes))


class VggDelSemantic(VggDel):
  """DEL's pre-training network (Sec. 2.5): the same trunk with a per-pixel classification
  layer (`classifier`, 1x1 conv to `num_classes` logits) in place of the embedding.

  Its trunk variables have the names of `VggDel`'s (stages/, sides/, fuse/), so a DEL run
  started from a pre-training run (`config.init_from`) takes them all; `classifier` is
  reported unused there and DEL's `embed` keeps its initialisation."""

  def __init__(self, *, width: int = PAPER_WIDTH, num_classes: int, dtype=None,
               rngs: nnx.Rngs):  # pylint: disable=super-init-not-called
    self._build_trunk(width, dtype, rngs)
    self.classifier = _conv(_scaled(FUSE_CHANNELS, width), num_classes, 1, dtype=dtype,
                            rngs=rngs)

  def __call__(self, images: jax.Array, sizes: jax.Array | None = None) -> jax.Array:
    """Logits (B, H, W, num_classes)."""
    return self.classifier(self.fused(images, sizes))


def valid_sizes(shape, sizes: jax.Array | None) -> list[jax.Array | None]:
  """Valid (height, width) per image at each stage's resolution: pools 1-3 halve and
  round down (the unpadded network's VALID 2x2 pools), pool4 keeps the size."""
  if sizes is None:
    return [None] * len(STAGES)
  sizes = jnp.asarray(sizes, jnp.int32).reshape(shape[0], 2)
  levels = [sizes]
  for index in range(1, len(STAGES)):
    levels.append(levels[-1] // 2 if index in (1, 2, 3) else levels[-1])
  return levels


def _mask(shape, sizes: jax.Array | None) -> jax.Array | None:
  """(B, H, W, 1) 1 inside each image's valid rectangle, 0 outside; None without sizes."""
  if sizes is None:
    return None
  rows = jnp.arange(shape[1])[None, :, None] < sizes[:, 0, None, None]
  cols = jnp.arange(shape[2])[None, None, :] < sizes[:, 1, None, None]
  return (rows & cols)[..., None]


def _masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  # Zero outside: a convolution then sees what its zero padding gives the cropped image.
  return x if mask is None else jnp.where(mask, x, jnp.zeros((), x.dtype))


def _axis_taps(out_length: int, source: jax.Array, target: jax.Array):
  """Bilinear taps (half-pixel centres) resizing `source` samples to `target` per image:
  indices (B, out_length) x 2 clamped to the source and the weight of the second."""
  scale = source.astype(jnp.float32) / jnp.maximum(target, 1).astype(jnp.float32)
  position = (jnp.arange(out_length, dtype=jnp.float32)[None] + 0.5) * scale[:, None] - 0.5
  low = jnp.floor(position)
  last = jnp.maximum(source - 1, 0)[:, None]
  first = jnp.clip(low, 0, last).astype(jnp.int32)
  second = jnp.clip(low + 1, 0, last).astype(jnp.int32)
  return first, second, position - low


def resize_valid(x: jax.Array, sizes: jax.Array | None, out_sizes: jax.Array | None,
                 out_shape: tuple[int, int]) -> jax.Array:
  """Bilinear resize of each image's valid part x[b, :h, :w] to its valid output size.

  The sample positions are `jax.image.resize`'s (half-pixel centres, edge samples
  clamped, which equals its renormalised triangle kernel when upsampling); without
  sizes the whole map is resized to `out_shape`. Output pixels beyond the valid output
  size repeat the edge (the caller masks them)."""
  batch, in_h, in_w = x.shape[:3]
  if sizes is None:
    sizes = jnp.tile(jnp.asarray([[in_h, in_w]], jnp.int32), (batch, 1))
    out_sizes = jnp.tile(jnp.asarray([out_shape], jnp.int32), (batch, 1))
  for axis, length in ((1, out_shape[0]), (2, out_shape[1])):
    first, second, weight = _axis_taps(length, sizes[:, axis - 1], out_sizes[:, axis - 1])
    shape = (batch, length, 1, 1) if axis == 1 else (batch, 1, length, 1)
    a = jnp.take_along_axis(x, first.reshape(shape), axis=axis)
    b = jnp.take_along_axis(x, second.reshape(shape), axis=axis)
    x = a + (b - a) * weight.reshape(shape).astype(x.dtype)
  return x


# ----------------------------------------------------------------------------- torchvision


def torchvision_vgg16_targets(model: VggDel) -> dict[str, tuple[nnx.Variable, tuple]]:
  """torchvision `vgg16().state_dict()` key -> (nnx variable, expected torch shape)."""
  targets = {}
  for stage, indices in zip(model.stages, TORCHVISION_CONV_INDICES):
    for conv, index in zip(stage, indices):
      kh, kw, cin, cout = conv.kernel.shape
      targets[f"features.{index}.weight"] = (conv.kernel, (cout, cin, kh, kw))
      targets[f"features.{index}.bias"] = (conv.bias, (cout,))
  return targets


def load_torchvision_vgg16(model: VggDel, path: str | os.PathLike) -> list[str]:
  """Copies torchvision VGG16 `features.*` weights from a state-dict file into `model`.

  `classifier.*` entries (the fully connected layers DEL cuts) are skipped and returned;
  the side branches keep their initialisation. Any missing `features` key or shape
  mismatch raises a ValueError naming the file and the keys, leaving the model unchanged.
  """
  from jhseg.models import torchvision_import  # pylint: disable=g-import-not-at-top

  if model.width != PAPER_WIDTH:
    raise ValueError(f"{path}: torchvision VGG16 weights need width={PAPER_WIDTH} "
                     f"(config.model.width); this model has width={model.width}")
  state = torchvision_import.read_state_dict(path)
  targets = torchvision_vgg16_targets(model)
  skipped = sorted(k for k in state if k.startswith("classifier."))
  unexpected = sorted(set(state) - set(targets) - set(skipped))
  missing = sorted(set(targets) - set(state))
  problems = []
  if missing:
    problems.append(f"missing keys: {missing}")
  if unexpected:
    problems.append(f"unexpected keys: {unexpected}")
  for key in sorted(set(targets) & set(state)):
    if tuple(state[key].shape) != targets[key][1]:
      problems.append(f"shape mismatch for {key}: file {tuple(state[key].shape)}, "
                      f"expected {targets[key][1]}")
  if problems:
    raise ValueError(f"{path}: not a torchvision VGG16 state dict; " + "; ".join(problems))
  for key, (variable, _) in targets.items():
    value = np.asarray(state[key], np.float32)
    if value.ndim == 4:
      value = np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    variable.set_value(jnp.asarray(value, variable.dtype))
  return skipped


def embedding_parameter_filter(path: Sequence, _value) -> bool:
  """True for the 1x1 embedding layer's parameters (DEL trains them with a larger LR)."""
  return bool(path) and path[0] == "embed"
