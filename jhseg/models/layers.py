"""Layers shared by several models.

`pointwise_conv`: a 1x1 convolution computed as a strided slice and a dot. Pass it as
`nnx.Conv(..., kernel_size=(1, 1), conv_general_dilated=pointwise_conv)`: the module,
its parameter names and shapes (kernel (1, 1, in, out), bias) are those of a plain
`nnx.Conv`, so checkpoints and weight imports do not change.

Used by the ResNet (every 1x1, incl. strided shortcuts) and CAST's stem projection, where
XLA:CPU kept a slow YNNPACK convolution. Not used by the 1x1 heads of VGG-DEL, DeepLabV3+
and HiPoSeg: measured 2026-11-30 (forward + gradients, in-process A/B, loaded 2-core
CPU), VGG-DEL's train gradients 1.04x, stride-1 1x1 convolutions of the DeepLab/HiPoSeg
head shapes 0.90-1.21x with bit-identical results (XLA already lowers those to the
same dot), i.e. no speed win.
"""
from __future__ import annotations

import jax


def pointwise_conv(lhs, rhs, window_strides, padding, *, lhs_dilation, rhs_dilation,
                   dimension_numbers, feature_group_count, precision, **kwargs):
  """A 1x1 convolution (NHWC, HWIO, zero/"SAME"/"VALID" padding) as a strided slice and a dot.

  Drop-in `conv_general_dilated` of `nnx.Conv` for 1x1 kernels: the same products
  and sums, but this jaxlib's XLA:CPU backend (YNNPACK) runs a dot several times
  faster than a 1x1 convolution, above all for the weight gradient, which it
  otherwise computes as a convolution over a whole feature map
  (bench/train_step.py, bench/cast.py).
  """
  # A 1x1 window needs no padding: "SAME" pads nothing, as "VALID" (any stride).
  no_padding = (padding in ("SAME", "VALID") if isinstance(padding, str)
                else tuple(map(tuple, padding)) == ((0, 0), (0, 0)))
  if (rhs.shape[:2] != (1, 1) or not no_padding
      or tuple(lhs_dilation) != (1, 1) or tuple(rhs_dilation) != (1, 1)
      or feature_group_count != 1 or dimension_numbers.lhs_spec != (0, 3, 1, 2)):
    raise ValueError("pointwise_conv: only ungrouped 1x1 NHWC convolutions without "
                     f"padding or dilation; got kernel {rhs.shape}, padding {padding}")
  stride_h, stride_w = window_strides
  return jax.lax.dot_general(lhs[:, ::stride_h, ::stride_w], rhs[0, 0],
                             (((3,), (0,)), ((), ())), precision=precision, **kwargs)
