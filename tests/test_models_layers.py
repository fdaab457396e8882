"""jhseg.models.layers.pointwise_conv inside nnx.Conv, and which models use it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import cast
from jhseg.models import layers


@pytest.mark.parametrize("padding, stride", [("SAME", 2), ("VALID", 1), ("SAME", 1)])
def test_pointwise_nnx_conv_with_string_padding_equals_the_convolution(padding, stride):
  # A 1x1 window pads nothing for "SAME" at any stride: the dot-based layer gives the
  # convolution's values on an odd size, with the same parameters (names and shapes).
  kwargs = dict(kernel_size=(1, 1), strides=stride, padding=padding, rngs=nnx.Rngs(3))
  plain = nnx.Conv(6, 5, **kwargs)
  dot = nnx.Conv(6, 5, conv_general_dilated=layers.pointwise_conv, **kwargs)
  state = nnx.state(plain, nnx.Param)
  assert jax.tree.map(jnp.shape, state) == jax.tree.map(jnp.shape, nnx.state(dot, nnx.Param))
  nnx.update(dot, state)
  x = jax.random.normal(jax.random.key(0), (2, 7, 9, 6))
  expected = plain(x)
  assert expected.shape == (2, -(-7 // stride), -(-9 // stride), 5)
  np.testing.assert_allclose(dot(x), expected, rtol=1e-5, atol=1e-5)


def test_pointwise_conv_rejects_padding_a_1x1_window_would_need():
  conv = nnx.Conv(4, 3, (1, 1), padding=((1, 1), (0, 0)),
                  conv_general_dilated=layers.pointwise_conv, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="1x1"):
    conv(jnp.zeros((1, 5, 5, 4)))


def test_cast_stem_uses_the_dot_for_its_1x1_projection_only():
  stem = nnx.eval_shape(lambda: cast.ConvStem(32, rngs=nnx.Rngs(0)))
  assert stem.proj.conv_general_dilated is layers.pointwise_conv
  assert all(c.conv_general_dilated is jax.lax.conv_general_dilated for c in stem.convs)
