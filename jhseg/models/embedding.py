"""HSG pixel embedding networks: FCN-ResNet and PSPNet-ResNet with 128-d unit embeddings.

HSG (Ke et al., CVPR 2022, sec. 4 and supplement) embeds every pixel with an FCN on a
ResNet-50 with DeepLabv3 dilations (output stride 16 for training, 8 for testing,
multi-grid (1, 2, 4) in the last stage) and the head

  1x1 conv (C -> C, no bias) - BatchNorm - ReLU - 1x1 conv (C -> 128),

followed by unit normalisation, v_i = f_i / ||f_i||. C is the backbone's output
channels (2048 for ResNet-50; the authors' `conv_out`), read from the backbone so that
a narrower ResNet (`width` < 64, for cheap CPU configurations) fits. The
ImageNet-pretrained VOC setting uses PSPNet-ResNet50 instead (`PSPEmbedding`): the
pyramid pooling module of Zhao et al. (CVPR 2017) on the backbone output -- average
pooling to 1x1, 2x2, 3x3 and 6x6 bins, each 1x1 conv (C -> 512) - BN - ReLU and
bilinear upsampling, concatenated with the
input and fused by a 3x3 conv (C + 4 * 512 -> 512) - BN - ReLU -- then the same head
on 512 channels. (The pyramid follows the authors' `PSPP` module; that the HSG head
then sits on its 512 channels is our reading, as the paper gives no more detail.)

Both networks output embeddings at the backbone's output stride; `upsample` resizes
them bilinearly by an integer factor first (the authors resize the test embeddings
to the input size; tiny CPU configs use it to keep enough pixels for grouping).
`with_output_stride` rebuilds a network at another stride with the same weights, to
train at 16 and test at 8. Inputs are float images in [0, 1], NHWC.

Tiny configurations use ResNet-18 (or 34), whose last stage has two (three) blocks,
possibly with a smaller base `width` (see `jhseg.models.resnet`; only width 64 takes
torchvision weights);
multi-grid needs one rate per block of layer4, so it is (1, 2, 4) only for
ResNet-50/101 and must be None or match the block count otherwise.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jhseg.models import resnet
from jhseg.models.spherical_kmeans import unit_normalize

# torchvision / PyTorch BatchNorm defaults, as the backbone.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5
PSP_BINS = (1, 2, 3, 6)
PSP_WIDTH = 512


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(features, use_running_average=False, momentum=_BN_MOMENTUM,
                       epsilon=_BN_EPSILON, rngs=rngs)


class EmbeddingHead(nnx.Module):
  """HSG's head: 1x1 conv (no bias) - BN - ReLU - 1x1 conv to `embedding_dim`."""

  def __init__(self, in_features: int, embedding_dim: int, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(in_features, in_features, (1, 1), use_bias=False, rngs=rngs)
    self.bn = _batch_norm(in_features, rngs)
    self.conv2 = nnx.Conv(in_features, embedding_dim, (1, 1), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.conv2(nnx.relu(self.bn(self.conv1(x))))


def adaptive_average_pool(x: jax.Array, bins: int) -> jax.Array:
  """(B, H, W, C) -> (B, bins, bins, C) as PyTorch's AdaptiveAvgPool2d.

  Bin i along an axis of length n averages [floor(i n / bins), ceil((i + 1) n / bins)),
  so bins overlap when n is not a multiple of `bins` and a 1-pixel axis is repeated.
  Written as two averaging matrices so shapes stay static under jit.
  """

  def matrix(n: int) -> jax.Array:
    i = jnp.arange(bins)[:, None]
    j = jnp.arange(n)[None, :]
    start = (i * n) // bins
    end = -((-(i + 1) * n) // bins)
    inside = ((j >= start) & (j < end)).astype(x.dtype)
    return inside / jnp.sum(inside, axis=1, keepdims=True)

  _, h, w, _ = x.shape
  return jnp.einsum("ph,qw,bhwc->bpqc", matrix(h), matrix(w), x)


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """Bilinear resize of (B, h, w, C) with half-pixel centres (PyTorch align_corners=False)."""
  b, _, _, c = x.shape
  return jax.image.resize(x, (b, height, width, c), method="bilinear", antialias=False)


class PyramidPooling(nnx.Module):
  """PSPNet's pyramid pooling module (see the module docstring)."""

  def __init__(self, in_features: int, *, width: int = PSP_WIDTH,
               bins: Sequence[int] = PSP_BINS, rngs: nnx.Rngs):
    self.bins = tuple(int(b) for b in bins)
    self.branch_convs = nnx.List([nnx.Conv(in_features, width, (1, 1), use_bias=False,
                                           rngs=rngs) for _ in self.bins])
    self.branch_norms = nnx.List([_batch_norm(width, rngs) for _ in self.bins])
    self.fuse_conv = nnx.Conv(in_features + width * len(self.bins), width, (3, 3),
                              padding=((1, 1), (1, 1)), use_bias=False, rngs=rngs)
    self.fuse_norm = _batch_norm(width, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    _, h, w, _ = x.shape
    outputs = [x]
    for bins, conv, norm in zip(self.bins, self.branch_convs, self.branch_norms):
      pooled = nnx.relu(norm(conv(adaptive_average_pool(x, bins))))
      outputs.append(resize_bilinear(pooled, h, w))
    return nnx.relu(self.fuse_norm(self.fuse_conv(jnp.concatenate(outputs, axis=-1))))


class FCNEmbedding(nnx.Module):
  """FCN-ResNet pixel embeddings (HSG): ResNet with dilations + `EmbeddingHead`.

  Call with images (B, H, W, 3) in [0, 1]; returns (B, H', W', embedding_dim) unit
  vectors, H' = ceil(H / output_stride) * upsample.
  """

  def __init__(self, *, depth: int = 50, output_stride: int = 16,
               multi_grid: Sequence[int] | None = (1, 2, 4), embedding_dim: int = 128,
               upsample: int = 1, width: int = resnet.PAPER_WIDTH, rngs: nnx.Rngs):
    self.options = dict(depth=depth, output_stride=output_stride,
                       multi_grid=None if multi_grid is None else tuple(multi_grid),
                       embedding_dim=embedding_dim, upsample=upsample, width=width)
    if int(upsample) < 1:
      raise ValueError(f"FCNEmbedding: upsample must be an integer >= 1, got {upsample}")
    self.upsample = int(upsample)
    self.embedding_dim = embedding_dim
    self.backbone = resnet.ResNet(depth, output_stride=output_stride,
                                  multi_grid=multi_grid, width=width, rngs=rngs)
    self.head = EmbeddingHead(self._head_features(), embedding_dim, rngs=rngs)

  def _head_features(self) -> int:
    return self.backbone.num_features

  def _neck(self, c5: jax.Array) -> jax.Array:
    return c5

  def __call__(self, images: jax.Array) -> jax.Array:
    c5 = self.backbone.features(resnet.imagenet_normalize(images)).c5
    x = self.head(self._neck(c5))
    if self.upsample > 1:
      _, h, w, _ = x.shape
      x = resize_bilinear(x, h * self.upsample, w * self.upsample)
    return unit_normalize(x)


class PSPEmbedding(FCNEmbedding):
  """PSPNet-ResNet pixel embeddings: ResNet + `PyramidPooling` + `EmbeddingHead`."""

  def __init__(self, *, depth: int = 50, output_stride: int = 16,
               multi_grid: Sequence[int] | None = (1, 2, 4), embedding_dim: int = 128,
               upsample: int = 1, width: int = resnet.PAPER_WIDTH,
               psp_width: int = PSP_WIDTH, rngs: nnx.Rngs):
    self.psp_width = psp_width
    super().__init__(depth=depth, output_stride=output_stride, multi_grid=multi_grid,
                     embedding_dim=embedding_dim, upsample=upsample, width=width,
                     rngs=rngs)
    self.options["psp_width"] = psp_width
    self.pyramid = PyramidPooling(self.backbone.num_features, width=psp_width, rngs=rngs)

  def _head_features(self) -> int:
    return self.psp_width

  def _neck(self, c5: jax.Array) -> jax.Array:
    return self.pyramid(c5)


# name -> class; `config.model.embedding` selects one.
EMBEDDINGS: dict[str, type[FCNEmbedding]] = {
    "fcn": FCNEmbedding,
    "pspnet": PSPEmbedding,
}


def make_embedding(name: str, *, rngs: nnx.Rngs, **options) -> FCNEmbedding:
  """The embedding network `name` of `EMBEDDINGS`; the error lists the valid names."""
  if name not in EMBEDDINGS:
    raise ValueError(f"unknown embedding network {name!r} (config.model.embedding); valid "
                     f"names: {sorted(EMBEDDINGS)}")
  return EMBEDDINGS[name](rngs=rngs, **options)


def with_output_stride(model: FCNEmbedding, output_stride: int) -> FCNEmbedding:
  """The same weights and BatchNorm statistics in a network of another output stride.

  Dilations change no parameter shape (see `resnet.with_output_stride`), so HSG can
  train at output stride 16 and embed test images at 8. The copy is built abstractly
  and shares `model`'s arrays; it starts in `model`'s BatchNorm mode.
  """
  options = {**model.options, "output_stride": int(output_stride)}
  cls = type(model)
  other = nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0), **options))
  nnx.update(other, nnx.state(model))
  other.set_attributes(use_running_average=model.head.bn.use_running_average)
  return other
