"""HSG pixel embedding networks: shapes, unit length, output-stride switch, pyramid pooling."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import embedding


def _images(batch=2, size=32):
  return jax.random.uniform(jax.random.key(0), (batch, size, size, 3))


@pytest.mark.parametrize("name", ["fcn", "pspnet"])
def test_unit_embeddings_at_the_output_stride(name):
  options = dict(depth=18, output_stride=8, multi_grid=None, embedding_dim=16, upsample=2)
  if name == "pspnet":
    options["psp_width"] = 8
  model = embedding.make_embedding(name, rngs=nnx.Rngs(0), **options)
  out = model(_images(size=40))
  # ceil(40 / 8) = 5 embeddings per side, upsampled x2.
  assert out.shape == (2, 10, 10, 16)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=-1), 1.0, atol=1e-5)


def test_head_is_conv_bn_relu_conv_on_the_backbone_width():
  model = embedding.FCNEmbedding(depth=18, output_stride=16, multi_grid=None,
                                 embedding_dim=128, rngs=nnx.Rngs(0))
  assert model.head.conv1.kernel.shape == (1, 1, 512, 512)
  assert model.head.conv1.bias is None
  assert model.head.conv2.kernel.shape == (1, 1, 512, 128)
  assert isinstance(model.head.bn, nnx.BatchNorm)


def test_with_output_stride_shares_weights_and_doubles_resolution():
  model = embedding.FCNEmbedding(depth=18, output_stride=16, multi_grid=None,
                                 embedding_dim=8, rngs=nnx.Rngs(0))
  model.eval()
  test_model = embedding.with_output_stride(model, 8)
  assert test_model.head.bn.use_running_average
  for a, b in zip(jax.tree.leaves(nnx.state(model, nnx.Param)),
                  jax.tree.leaves(nnx.state(test_model, nnx.Param))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  images = _images(batch=1, size=32)
  assert model(images).shape == (1, 2, 2, 8)
  assert test_model(images).shape == (1, 4, 4, 8)
  assert model.options["output_stride"] == 16  # the original is untouched


def test_adaptive_average_pool_matches_pytorch_bins():
  # PyTorch bins of length 5 into 3: [0, 2), [1, 4), [3, 5) -> means 0.5, 2, 3.5.
  x = jnp.arange(5.0).reshape(1, 5, 1, 1) * jnp.ones((1, 5, 2, 1))
  out = embedding.adaptive_average_pool(x, 3)
  np.testing.assert_allclose(np.asarray(out[0, :, 0, 0]), [0.5, 2.0, 3.5])
  # Independent loop reference on a random 7 x 5 map.
  values = np.random.default_rng(0).normal(size=(1, 7, 5, 2))
  bins = 3
  expected = np.zeros((1, bins, bins, 2))
  for i in range(bins):
    for j in range(bins):
      r0, r1 = (i * 7) // bins, -((-(i + 1) * 7) // bins)
      c0, c1 = (j * 5) // bins, -((-(j + 1) * 5) // bins)
      expected[0, i, j] = values[0, r0:r1, c0:c1].mean(axis=(0, 1))
  np.testing.assert_allclose(np.asarray(embedding.adaptive_average_pool(
      jnp.asarray(values, jnp.float32), bins)), expected, rtol=1e-5, atol=1e-6)


def test_pyramid_pooling_layout():
  module = embedding.PyramidPooling(16, width=4, rngs=nnx.Rngs(0))
  assert module.bins == (1, 2, 3, 6)
  assert module.fuse_conv.kernel.shape == (3, 3, 16 + 4 * 4, 4)
  out = module(jnp.ones((1, 7, 9, 16)))
  assert out.shape == (1, 7, 9, 4)


def test_unknown_embedding_names_the_valid_ones():
  with pytest.raises(ValueError, match="fcn.*pspnet"):
    embedding.make_embedding("deeplab", rngs=nnx.Rngs(0))


def test_upsample_must_be_a_positive_integer():
  with pytest.raises(ValueError, match="upsample"):
    embedding.FCNEmbedding(depth=18, multi_grid=None, upsample=0, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("width", [16, 64])
def test_heads_read_the_backbone_channels_of_any_width(width):
  c5 = 8 * width  # ResNet-18's last stage: 512 at the paper width
  fcn = nnx.eval_shape(lambda: embedding.FCNEmbedding(
      depth=18, multi_grid=None, embedding_dim=8, width=width, rngs=nnx.Rngs(0)))
  assert fcn.backbone.width == width and fcn.options["width"] == width
  assert fcn.head.conv1.kernel.shape == (1, 1, c5, c5)
  assert fcn.head.conv2.kernel.shape == (1, 1, c5, 8)
  psp = nnx.eval_shape(lambda: embedding.PSPEmbedding(
      depth=50, embedding_dim=8, width=width, psp_width=4, rngs=nnx.Rngs(0)))
  bottleneck_c5 = 32 * width  # 2048 at the paper width
  assert psp.pyramid.branch_convs[0].kernel.shape == (1, 1, bottleneck_c5, 4)
  assert psp.pyramid.fuse_conv.kernel.shape == (3, 3, bottleneck_c5 + 4 * 4, 4)
  assert psp.head.conv1.kernel.shape == (1, 1, 4, 4)


@pytest.mark.parametrize("name", ["fcn", "pspnet"])
def test_narrow_backbone_embeds_and_keeps_its_width_at_another_output_stride(name):
  options = dict(depth=18, output_stride=16, multi_grid=None, embedding_dim=8, width=16)
  if name == "pspnet":
    options["psp_width"] = 8
  model = embedding.make_embedding(name, rngs=nnx.Rngs(0), **options)
  model.eval()
  out = model(_images(batch=1, size=32))
  assert out.shape == (1, 2, 2, 8)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(out), axis=-1), 1.0, atol=1e-5)
  test_model = embedding.with_output_stride(model, 8)
  assert test_model.backbone.width == 16
  assert test_model(_images(batch=1, size=32)).shape == (1, 4, 4, 8)
