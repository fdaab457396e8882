"""U-Net on a ResNet encoder predicting per-pixel logits over hierarchy levels.

The network of the supervised ultrametric segmentation paper (Lapertot, Chierchia,
Perret, "Supervised Learning of Hierarchical Image Segmentation", CIARP 2023): a U-Net
(Ronneberger et al., MICCAI 2015) with an ImageNet ResNet-50 encoder that outputs, for
every pixel, logits over the L levels of the hierarchy (L = 3 for {0, 0.5, 1}; L = 2
for the binary BGM variants). `jhseg.losses.edge_level_log_probabilities` turns them
into edge-level distributions (the mean of the two pixels' softmax).

The paper does not detail the decoder; we use the common U-Net-on-ResNet decoder
(as in the widely used segmentation_models_pytorch `Unet`): five blocks with 256, 128,
64, 32, 16 channels, each "upsample x2 (nearest), concatenate the encoder feature of
that resolution (c4, c3, c2, c1, then none), two 3x3 conv-BatchNorm-ReLU", followed by
a 3x3 convolution to the L logits at the input resolution. The skip channels are
read from the encoder (`ResNet.stage_features`), so a narrower encoder (base `width`
< 64, for cheap CPU configurations) needs no other change. Upsampling goes to the
exact size of the skip feature, so any input size works (e.g. 321x481), not only
multiples of 32.
"""

from __future__ import annotations

from typing import Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jhseg.models import resnet

DEFAULT_DECODER_FEATURES = (256, 128, 64, 32, 16)


def _resize_nearest(x: jax.Array, height: int, width: int) -> jax.Array:
  # For an exact factor 2 this equals repeating each pixel twice (half-pixel centres).
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "nearest")


class ConvBatchNormRelu(nnx.Module):
  """3x3 convolution (no bias), BatchNorm, ReLU."""

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = nnx.Conv(in_features, out_features, (3, 3), padding=((1, 1), (1, 1)),
                         use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = nnx.BatchNorm(out_features, momentum=0.9, epsilon=1e-5, dtype=dtype,
                            rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class DecoderBlock(nnx.Module):
  """Upsample to the skip's size, concatenate the skip, two ConvBatchNormRelu."""

  def __init__(self, in_features: int, skip_features: int, out_features: int, *,
               dtype, rngs: nnx.Rngs):
    self.conv1 = ConvBatchNormRelu(in_features + skip_features, out_features,
                                   dtype=dtype, rngs=rngs)
    self.conv2 = ConvBatchNormRelu(out_features, out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, skip: jax.Array | None,
               size: tuple[int, int]) -> jax.Array:
    x = _resize_nearest(x, *size)
    if skip is not None:
      x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    return self.conv2(self.conv1(x))


class UNet(nnx.Module):
  """ResNet-encoder U-Net: images (B, H, W, 3) in [0, 1] -> logits (B, H, W, L), float32.

  The encoder (`self.encoder`, a `ResNet` of base `width` with torchvision names, so
  its last stage is `self.encoder.layer4`) receives ImageNet-normalised images, which
  is what `jhseg.models.torchvision_import.load_torchvision_resnet(model.encoder, path)`
  weights expect (width 64 only). BatchNorm follows `model.train()` / `model.eval()`.
  """

  def __init__(self, num_levels: int = 3, *, depth: int = 50,
               decoder_features: Sequence[int] = DEFAULT_DECODER_FEATURES,
               width: int = resnet.PAPER_WIDTH, dtype: jnp.dtype | None = None,
               rngs: nnx.Rngs):
    if num_levels < 2:
      raise ValueError(f"UNet: num_levels={num_levels}; need at least 2 levels "
                       "(3 for {0, 0.5, 1}, 2 for the binary BGM variants)")
    if len(decoder_features) != 5:
      raise ValueError(f"UNet: decoder_features={tuple(decoder_features)} needs 5 "
                       "values, one per decoder block (strides 16, 8, 4, 2, 1)")
    self.num_levels = num_levels
    self.encoder = resnet.ResNet(depth, num_classes=None, width=width, dtype=dtype,
                                 rngs=rngs)
    c1, c2, c3, c4, c5 = self.encoder.stage_features
    skips = (c4, c3, c2, c1, 0)
    blocks, features = [], c5
    for skip, out in zip(skips, decoder_features):
      blocks.append(DecoderBlock(features, skip, out, dtype=dtype, rngs=rngs))
      features = out
    self.decoder = nnx.List(blocks)
    self.head = nnx.Conv(features, num_levels, (3, 3), padding=((1, 1), (1, 1)),
                         dtype=dtype, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    if images.ndim != 4:
      raise ValueError(f"UNet: images should be (B, H, W, C) in [0, 1], got shape "
                       f"{images.shape}")
    height, width = images.shape[1:3]
    features = self.encoder.features(resnet.imagenet_normalize(images))
    skips = (features.c4, features.c3, features.c2, features.c1, None)
    x = features.c5
    for block, skip in zip(self.decoder, skips):
      size = (height, width) if skip is None else skip.shape[1:3]
      x = block(x, skip, size)
    return self.head(x).astype(jnp.float32)
