"""ResNet encoder: stage shapes per output stride, DeepLabv3 dilations, sizes, modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import resnet


def _num_params(model):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("depth, expected", [(18, 11_689_512), (50, 25_557_032)])
def test_parameter_count_matches_torchvision(depth, expected):
  # torchvision's published sizes of resnet18 / resnet50 with the 1000-class head.
  model = nnx.eval_shape(lambda: resnet.ResNet(depth, num_classes=1000,
                                               rngs=nnx.Rngs(0)))
  assert _num_params(model) == expected


@pytest.mark.parametrize("output_stride, spatial", [
    (32, (16, 8, 4, 2, 1)), (16, (16, 8, 4, 2, 2)), (8, (16, 8, 4, 4, 4))])
def test_resnet50_stage_shapes_per_output_stride(output_stride, spatial):
  model = nnx.eval_shape(lambda: resnet.ResNet(50, output_stride=output_stride,
                                               rngs=nnx.Rngs(0)))
  features = nnx.eval_shape(lambda m, x: m.features(x), model,
                            jnp.zeros((2, 32, 32, 3)))
  channels = (64, 256, 512, 1024, 2048)
  assert model.stage_features == channels
  for feature, size, width in zip(features, spatial, channels):
    assert feature.shape == (2, size, size, width)
    assert feature.dtype == jnp.float32


@pytest.fixture(scope="module")
def resnet18():
  """One concrete ResNet-18 (random init is the slow part on CPU), output stride 8."""
  return resnet.ResNet(18, output_stride=8, num_classes=4, rngs=nnx.Rngs(0))


def test_resnet18_features_run_under_jit(resnet18):
  resnet18.eval()
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3))
  features = nnx.jit(lambda m, x: m.features(x))(resnet18, x)
  assert [f.shape for f in features] == [
      (1, 16, 16, 64), (1, 8, 8, 64), (1, 4, 4, 128), (1, 4, 4, 256), (1, 4, 4, 512)]
  assert all(np.all(np.isfinite(f)) for f in features)
  # Eval mode: each image is processed independently of the rest of the batch.
  pair = jnp.concatenate([x, 1.0 - x])
  np.testing.assert_allclose(nnx.jit(lambda m, x: m.features(x))(resnet18, pair).c5[:1],
                             features.c5, rtol=1e-5, atol=1e-5)


def test_with_output_stride_shares_weights_and_only_changes_dilated_stages(resnet18):
  resnet18.eval()
  strided = resnet.with_output_stride(resnet18, 32)
  assert strided.bn1.use_running_average
  assert strided.layer4[1].conv2.kernel_dilation == (1, 1)
  assert strided.layer3[0].conv1.strides == (2, 2)  # BasicBlock: stride on conv1
  np.testing.assert_array_equal(strided.layer4[1].conv2.kernel[...],
                                resnet18.layer4[1].conv2.kernel[...])
  x = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3))
  features = nnx.jit(lambda m, x: m.features(x))
  dilated_out, strided_out = features(resnet18, x), features(strided, x)
  # Output stride 8 dilates layer3 and layer4 only: c1..c3 are the same computation.
  for name in ("c1", "c2", "c3"):
    np.testing.assert_allclose(getattr(dilated_out, name), getattr(strided_out, name),
                               rtol=1e-5, atol=1e-6)
  assert strided_out.c5.shape == (1, 1, 1, 512) and dilated_out.c5.shape == (1, 4, 4, 512)


def test_dilation_plans_by_hand():
  blocks = (3, 4, 6, 3)
  # torchvision: the first block of a dilated stage keeps the previous dilation.
  assert resnet.stage_dilations(16, blocks) == (
      (1, (1, 1, 1)), (2, (1,) * 4), (2, (1,) * 6), (1, (1, 2, 2)))
  assert resnet.stage_dilations(8, blocks) == (
      (1, (1, 1, 1)), (2, (1,) * 4), (1, (1, 2, 2, 2, 2, 2)), (1, (2, 4, 4)))
  # DeepLabv3 multi-grid: rates = stage dilation x unit rates, e.g. 2·(1, 2, 4).
  assert resnet.stage_dilations(16, blocks, (1, 2, 4))[3] == (1, (2, 4, 8))
  assert resnet.stage_dilations(8, blocks, (1, 2, 4))[3] == (1, (4, 8, 16))
  assert resnet.stage_dilations(32, blocks, (1, 2, 4))[3] == (2, (1, 2, 4))


def test_model_uses_the_planned_dilations_and_keeps_weight_shapes():
  dilated = nnx.eval_shape(lambda: resnet.ResNet(
      50, output_stride=16, multi_grid=(1, 2, 4), rngs=nnx.Rngs(0)))
  assert [b.conv2.kernel_dilation for b in dilated.layer4] == [(2, 2), (4, 4), (8, 8)]
  assert dilated.layer4[0].conv2.strides == (1, 1)
  assert dilated.layer4[0].downsample.conv.strides == (1, 1)
  plain = nnx.eval_shape(lambda: resnet.ResNet(50, rngs=nnx.Rngs(0)))
  # Same parameters whatever the output stride: ImageNet weights load into any.
  shapes = lambda m: jax.tree.map(lambda x: x.shape, nnx.state(m))
  assert shapes(dilated) == shapes(plain)


def test_invalid_configurations_list_valid_values():
  with pytest.raises(ValueError, match=r"depth=42 .*\[18, 34, 50, 101\]"):
    resnet.ResNet(42, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"output_stride=4 .*\[8, 16, 32\]"):
    resnet.ResNet(18, output_stride=4, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="multi_grid=.*3 values"):
    resnet.ResNet(50, multi_grid=(1, 2), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="num_classes=None"):
    resnet.ResNet(18, rngs=nnx.Rngs(0))(jnp.zeros((1, 32, 32, 3)))


def test_train_mode_updates_batch_norm_statistics_and_eval_mode_does_not(resnet18):
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3)) + 3.0
  forward = nnx.jit(lambda m, x: m(x))
  before = np.asarray(resnet18.bn1.mean[...]).copy()
  resnet18.eval()
  forward(resnet18, x)
  np.testing.assert_array_equal(resnet18.bn1.mean[...], before)
  resnet18.train()
  logits = forward(resnet18, x)
  assert logits.shape == (2, 4)
  # Running mean <- 0.9 running mean + 0.1 batch mean (torch's momentum 0.1).
  conv1 = nnx.jit(lambda m, x: m.conv1(x))(resnet18, x)
  np.testing.assert_allclose(resnet18.bn1.mean[...],
                             0.9 * before + 0.1 * np.mean(conv1, axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-5)
  resnet18.eval()


def test_imagenet_normalize():
  gray = jnp.full((1, 1, 1, 3), 0.5)
  expected = (0.5 - np.array(resnet.IMAGENET_MEAN)) / np.array(resnet.IMAGENET_STD)
  np.testing.assert_allclose(resnet.imagenet_normalize(gray)[0, 0, 0], expected,
                             rtol=1e-6)


# ----------------------------------------------------------------------------- base width


def _resnet18_encoder_params(width):
  """Parameters of a ResNet-18 encoder (no fc) of base width w, counted by hand.

  Stage convolutions in units of w^2 (kernel area x in x out): layer1 4 x 9 = 36;
  layer2 9*1*2 + 3 x 9*2*2 + 1x1 downsample 1*2 = 128; layer3 72 + 432 + 8 = 512;
  layer4 288 + 1728 + 32 = 2048; sum 2724. Stem 7x7x3 = 147 w. BatchNorm scale and
  bias over w + 4w + (8 + 2)w + (16 + 4)w + (32 + 8)w = 75w channels: 150 w.
  """
  return 2724 * width**2 + 147 * width + 150 * width


def test_hand_count_of_parameters_per_width():
  # The formula agrees with torchvision's 11,689,512 for resnet18 minus its 512x1000 fc.
  assert _resnet18_encoder_params(64) == 11_689_512 - 512 * 1000 - 1000
  for width in (64, 16):
    model = nnx.eval_shape(lambda: resnet.ResNet(18, width=width, rngs=nnx.Rngs(0)))
    assert _num_params(model) == _resnet18_encoder_params(width)


@pytest.mark.parametrize("depth, width, channels", [
    (18, 64, (64, 64, 128, 256, 512)),
    (18, 16, (16, 16, 32, 64, 128)),
    (50, 64, (64, 256, 512, 1024, 2048)),
    (50, 16, (16, 64, 128, 256, 512)),
    (50, 8, (8, 32, 64, 128, 256))])
def test_base_width_scales_the_stem_and_every_stage(depth, width, channels):
  model = nnx.eval_shape(lambda: resnet.ResNet(depth, output_stride=16, width=width,
                                               num_classes=5, rngs=nnx.Rngs(0)))
  assert model.width == width and model.stage_features == channels
  assert model.num_features == channels[-1]
  assert model.conv1.kernel.shape == (7, 7, 3, width)
  assert model.fc.kernel.shape == (channels[-1], 5)
  features = nnx.eval_shape(lambda m, x: m.features(x), model, jnp.zeros((2, 32, 32, 3)))
  for feature, size, expected in zip(features, (16, 8, 4, 2, 2), channels):
    assert feature.shape == (2, size, size, expected)


def test_narrow_resnet_runs_and_keeps_its_width_at_another_output_stride():
  model = resnet.ResNet(18, output_stride=8, width=16, rngs=nnx.Rngs(0))
  model.eval()
  x = jax.random.uniform(jax.random.key(3), (1, 32, 32, 3))
  features = nnx.jit(lambda m, x: m.features(x))
  dilated = features(model, x)
  assert [f.shape for f in dilated] == [
      (1, 16, 16, 16), (1, 8, 8, 16), (1, 4, 4, 32), (1, 4, 4, 64), (1, 4, 4, 128)]
  assert all(np.all(np.isfinite(f)) for f in dilated)
  strided = resnet.with_output_stride(model, 32)
  assert strided.width == 16
  out = features(strided, x)
  assert out.c5.shape == (1, 1, 1, 128)
  np.testing.assert_allclose(out.c3, dilated.c3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [0, -16, 16.0, True])
def test_invalid_width_is_named(width):
  with pytest.raises(ValueError, match=r"width=.* positive integer"):
    resnet.ResNet(18, width=width, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("stride", [1, 2])
def test_pointwise_conv_matches_the_convolution_and_its_gradients(stride):
  # ResNet's 1x1 convolutions run as a slice and a dot (XLA:CPU speed): same values and
  # the same gradients for the input and the kernel as lax's convolution, odd sizes too.
  x = jax.random.normal(jax.random.key(4), (2, 9, 7, 6))
  kernel = jax.random.normal(jax.random.key(5), (1, 1, 6, 5))
  dn = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
  no_pad = ((0, 0), (0, 0))
  conv = lambda x, k: jax.lax.conv_general_dilated(x, k, (stride, stride), no_pad,
                                                   dimension_numbers=dn)
  dot = lambda x, k: resnet.pointwise_conv(
      x, k, (stride, stride), no_pad, lhs_dilation=(1, 1), rhs_dilation=(1, 1),
      dimension_numbers=dn, feature_group_count=1, precision=None)
  expected, actual = conv(x, kernel), dot(x, kernel)
  height, width = {1: (9, 7), 2: (5, 4)}[stride]  # ceil(size / stride)
  assert actual.shape == expected.shape == (2, height, width, 5)
  np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  weights = jax.random.normal(jax.random.key(6), expected.shape)
  loss = lambda f: lambda x, k: jnp.sum(weights * f(x, k))
  for got, want in zip(jax.grad(loss(dot), (0, 1))(x, kernel),
                       jax.grad(loss(conv), (0, 1))(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="1x1"):
    resnet.pointwise_conv(x, jnp.zeros((3, 3, 6, 5)), (1, 1), ((1, 1), (1, 1)),
                          lhs_dilation=(1, 1), rhs_dilation=(1, 1), dimension_numbers=dn,
                          feature_group_count=1, precision=None)


def test_resnet_uses_the_dot_for_1x1_convolutions_only():
  model = nnx.eval_shape(lambda: resnet.ResNet(50, rngs=nnx.Rngs(0)))
  block = model.layer2[0]
  assert block.conv1.conv_general_dilated is resnet.pointwise_conv
  assert block.downsample.conv.conv_general_dilated is resnet.pointwise_conv
  assert block.conv2.conv_general_dilated is jax.lax.conv_general_dilated
