"""DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic
Image Segmentation", ECCV 2018) on the dilated ResNet of `jhseg.models.resnet`, flax.nnx.

HiPoSeg's segmentation network (Lim et al., section 4.1: DeepLabV3+ with ResNet-101) and
the baseline of its Tables 1-5. The parts:

  encoder   ResNet (default 101) with output stride 16 or 8 (`resnet.OUTPUT_STRIDES`);
  ASPP      on c5: a 1x1 branch, three 3x3 atrous branches with rates (6, 12, 18) at
            output stride 16 -- doubled, (12, 24, 36), at 8 (DeepLabv3, section 3.3) --
            and image pooling (global average, 1x1 conv, broadcast back); each branch
            conv-BN-ReLU with `aspp_features` (256) channels; concatenation projected by
            a 1x1 conv-BN-ReLU to `aspp_features`;
  decoder   the low-level feature c2 (layer1 output, stride 4) projected by a 1x1
            conv-BN-ReLU to `low_level_features` (48, DeepLabV3+ section 3.1), the ASPP
            output upsampled bilinearly to c2's size and concatenated, then two 3x3
            conv-BN-ReLU with `decoder_features` (256) channels;
  classifier  a 1x1 conv (with bias) to the classes, upsampled bilinearly to the input.

`model(images)` returns float32 logits (B, H, W, K). `model(images, return_features=True)`
returns `DeepLabOutputs(logits, decoder, aspp, low_level)`, the intermediate features
HiPoSeg's training-only projection head reads (section 3.1, "multiple feature stages");
the logits are the same either way, so removing the head changes nothing at inference.

Channel counts of the skip are read from the encoder (`ResNet.stage_features`), so a
narrower encoder (base `width` < 64, for cheap CPU configurations) needs no other change.
ImageNet weights: `jhseg.models.torchvision_import.load_torchvision_resnet(model.encoder,
path)` (width 64 only). BatchNorm follows `model.train()` / `model.eval()`.

Faithfulness:
  * Plain (not depthwise-separable) 3x3 convolutions in ASPP and decoder, as the common
    ResNet-101 DeepLabV3+ implementations (torchvision-style, mmsegmentation's
    `DepthwiseSeparableASPPHead` is the separable variant): the Xception-specific
    separable convolutions are an efficiency choice of the original paper, not part of
    the ResNet-101 setting HiPoSeg reports.
  * No dropout after the ASPP projection (the original TF code uses 0.1): the model keeps
    no random state, so training and inference are deterministic functions of the
    parameters; add it if a long run overfits.
  * Bilinear resizes use half-pixel centres (PyTorch `align_corners=False`); the original
    TF code aligned corners.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jhseg.models import resnet

# Atrous rates of the three 3x3 ASPP branches at output stride 16; doubled at 8.
ASPP_RATES_OS16 = (6, 12, 18)
ASPP_RATES: dict[int, tuple[int, ...]] = {
    16: ASPP_RATES_OS16,
    8: tuple(2 * rate for rate in ASPP_RATES_OS16),
}
PAPER_ASPP_FEATURES = 256
PAPER_LOW_LEVEL_FEATURES = 48
PAPER_DECODER_FEATURES = 256
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class DeepLabOutputs(NamedTuple):
  """Logits and the intermediate features of one forward pass.

  logits:    (B, H, W, K) float32, at the input resolution.
  decoder:   (B, H/4, W/4, decoder_features), the last decoder features (before the
             classifier).
  aspp:      (B, H/OS, W/OS, aspp_features), the projected ASPP output.
  low_level: (B, H/4, W/4, low_level_features), the projected c2 skip.
  """
  logits: jax.Array
  decoder: jax.Array
  aspp: jax.Array
  low_level: jax.Array


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
  """(B, h, w, C) -> (B, height, width, C), half-pixel centres, no antialiasing."""
  return jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "bilinear",
                          antialias=False)


class ConvBNReLU(nnx.Module):
  """k x k convolution (no bias, dilation `rate`, 'same' size) - BatchNorm - ReLU."""

  def __init__(self, in_features: int, out_features: int, kernel: int = 1, *,
               rate: int = 1, dtype=None, rngs: nnx.Rngs):
    pad = rate * (kernel - 1) // 2
    self.conv = nnx.Conv(in_features, out_features, (kernel, kernel),
                         padding=((pad, pad), (pad, pad)), kernel_dilation=(rate, rate),
                         use_bias=False, dtype=dtype, rngs=rngs)
    self.bn = nnx.BatchNorm(out_features, use_running_average=False, momentum=_BN_MOMENTUM,
                            epsilon=_BN_EPSILON, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x)))


class ASPP(nnx.Module):
  """Atrous spatial pyramid pooling with image pooling (DeepLabv3 section 3.3)."""

  def __init__(self, in_features: int, out_features: int = PAPER_ASPP_FEATURES, *,
               rates: Sequence[int] = ASPP_RATES_OS16, dtype=None, rngs: nnx.Rngs):
    self.rates = tuple(int(rate) for rate in rates)
    self.pointwise = ConvBNReLU(in_features, out_features, 1, dtype=dtype, rngs=rngs)
    self.atrous = nnx.List([ConvBNReLU(in_features, out_features, 3, rate=rate,
                                       dtype=dtype, rngs=rngs) for rate in self.rates])
    self.pooling = ConvBNReLU(in_features, out_features, 1, dtype=dtype, rngs=rngs)
    branches = 2 + len(self.rates)
    self.project = ConvBNReLU(branches * out_features, out_features, 1, dtype=dtype,
                              rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, _ = x.shape
    pooled = self.pooling(jnp.mean(x, axis=(1, 2), keepdims=True))
    pooled = jnp.broadcast_to(pooled, (batch, height, width, pooled.shape[-1]))
    branches = [self.pointwise(x)] + [branch(x) for branch in self.atrous] + [pooled]
    return self.project(jnp.concatenate(branches, axis=-1))


class Decoder(nnx.Module):
  """DeepLabV3+ decoder: 1x1 low-level projection, concat, two 3x3 conv-BN-ReLU."""

  def __init__(self, aspp_features: int, skip_features: int, *,
               low_level_features: int = PAPER_LOW_LEVEL_FEATURES,
               decoder_features: int = PAPER_DECODER_FEATURES, dtype=None,
               rngs: nnx.Rngs):
    self.low_level = ConvBNReLU(skip_features, low_level_features, 1, dtype=dtype,
                                rngs=rngs)
    self.conv1 = ConvBNReLU(aspp_features + low_level_features, decoder_features, 3,
                            dtype=dtype, rngs=rngs)
    self.conv2 = ConvBNReLU(decoder_features, decoder_features, 3, dtype=dtype, rngs=rngs)

  def __call__(self, aspp: jax.Array, skip: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(decoder features, projected low-level features), both at the skip's size."""
    low_level = self.low_level(skip)
    upsampled = resize_bilinear(aspp, *skip.shape[1:3]).astype(low_level.dtype)
    x = jnp.concatenate([upsampled, low_level], axis=-1)
    return self.conv2(self.conv1(x)), low_level


def aspp_rates(output_stride: int) -> tuple[int, ...]:
  """ASPP rates for an output stride; the error lists the supported strides."""
  if output_stride not in ASPP_RATES:
    raise ValueError(f"DeepLabV3Plus: output_stride={output_stride!r} is not supported; "
                     f"valid values: {sorted(ASPP_RATES)}")
  return ASPP_RATES[output_stride]


class DeepLabV3Plus(nnx.Module):
  """DeepLabV3+: images (B, H, W, 3) in [0, 1] -> logits (B, H, W, num_classes), float32.

  Args:
    num_classes: K, the classes of the per-pixel classifier.
    depth: ResNet depth (18, 34, 50, 101; 101 in HiPoSeg).
    output_stride: 16 or 8 (the encoder's dilations and the ASPP rates follow).
    multi_grid: optional DeepLabv3 multi-grid rates of layer4 (see `resnet.ResNet`).
    width: the encoder's base width (64 for the paper network and torchvision weights).
    aspp_features, low_level_features, decoder_features: 256, 48, 256 in the paper;
      smaller values make cheap CPU configurations.
    aspp_rates_override: explicit ASPP rates instead of those of `output_stride`.
  """

  def __init__(self, num_classes: int, *, depth: int = 101, output_stride: int = 16,
               multi_grid: Sequence[int] | None = None, width: int = resnet.PAPER_WIDTH,
               aspp_features: int = PAPER_ASPP_FEATURES,
               low_level_features: int = PAPER_LOW_LEVEL_FEATURES,
               decoder_features: int = PAPER_DECODER_FEATURES,
               aspp_rates_override: Sequence[int] | None = None,
               dtype: jnp.dtype | None = None, rngs: nnx.Rngs):
    if int(num_classes) < 1:
      raise ValueError(f"DeepLabV3Plus: num_classes={num_classes}; need at least 1 class")
    for name, value in (("aspp_features", aspp_features),
                        ("low_level_features", low_level_features),
                        ("decoder_features", decoder_features)):
      if int(value) < 1:
        raise ValueError(f"DeepLabV3Plus: {name}={value} should be a positive integer")
    rates = (aspp_rates(output_stride) if aspp_rates_override is None
             else tuple(aspp_rates_override))
    self.options = dict(
        num_classes=int(num_classes), depth=depth, output_stride=output_stride,
        multi_grid=None if multi_grid is None else tuple(multi_grid), width=width,
        aspp_features=aspp_features, low_level_features=low_level_features,
        decoder_features=decoder_features,
        aspp_rates_override=None if aspp_rates_override is None else rates, dtype=dtype)
    self.num_classes = int(num_classes)
    self.encoder = resnet.ResNet(depth, output_stride=output_stride, multi_grid=multi_grid,
                                 num_classes=None, width=width, dtype=dtype, rngs=rngs)
    _, c2, _, _, c5 = self.encoder.stage_features
    self.aspp = ASPP(c5, aspp_features, rates=rates, dtype=dtype, rngs=rngs)
    self.decoder = Decoder(aspp_features, c2, low_level_features=low_level_features,
                           decoder_features=decoder_features, dtype=dtype, rngs=rngs)
    self.classifier = nnx.Conv(decoder_features, self.num_classes, (1, 1), dtype=dtype,
                               rngs=rngs)

  def __call__(self, images: jax.Array, *, return_features: bool = False
               ) -> jax.Array | DeepLabOutputs:
    if images.ndim != 4:
      raise ValueError(f"DeepLabV3Plus: images should be (B, H, W, C) in [0, 1], got "
                       f"shape {images.shape}")
    height, width = images.shape[1:3]
    features = self.encoder.features(resnet.imagenet_normalize(images))
    aspp = self.aspp(features.c5)
    decoder, low_level = self.decoder(aspp, features.c2)
    logits = resize_bilinear(self.classifier(decoder), height, width).astype(jnp.float32)
    if not return_features:
      return logits
    return DeepLabOutputs(logits=logits, decoder=decoder, aspp=aspp, low_level=low_level)


def with_output_stride(model: DeepLabV3Plus, output_stride: int) -> DeepLabV3Plus:
  """The same weights and statistics at another output stride (e.g. train 16, test 8).

  Dilations change no parameter shape; the ASPP rates follow the new stride unless the
  model was built with explicit rates. Built abstractly and sharing `model`'s arrays; it
  starts in `model`'s BatchNorm mode.
  """
  options = {**model.options, "output_stride": int(output_stride)}
  other = nnx.eval_shape(lambda: DeepLabV3Plus(rngs=nnx.Rngs(0), **options))
  nnx.update(other, nnx.state(model))
  other.set_attributes(use_running_average=model.encoder.bn1.use_running_average)
  return other
