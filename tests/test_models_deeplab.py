"""DeepLabV3+: shapes at output stride 8/16, hand-counted head parameters, features,
output-stride switch, torchvision weight import into the encoder, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import deeplab
from jhseg.models import torchvision_import

TINY = dict(depth=18, width=4, aspp_features=8, low_level_features=3, decoder_features=6)


def _num_params(module):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("output_stride, aspp_size, rates", [
    (16, 2, (6, 12, 18)), (8, 4, (12, 24, 36))])
def test_shapes_and_rates_per_output_stride(output_stride, aspp_size, rates):
  model = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(
      5, output_stride=output_stride, rngs=nnx.Rngs(0), **TINY))
  out = nnx.eval_shape(lambda m, x: m(x, return_features=True), model,
                       jnp.zeros((2, 32, 32, 3)))
  assert out.logits.shape == (2, 32, 32, 5) and out.logits.dtype == jnp.float32
  assert out.decoder.shape == (2, 8, 8, 6)
  assert out.low_level.shape == (2, 8, 8, 3)
  assert out.aspp.shape == (2, aspp_size, aspp_size, 8)
  assert [b.conv.kernel_dilation for b in model.aspp.atrous] == [(r, r) for r in rates]


def test_paper_network_defaults():
  # ResNet-101, 256-channel ASPP on its 2048 channels, 48-channel projection of layer1's
  # 256 channels, 256-channel decoder (construction only: tracing ResNet-101 is slow).
  model = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(21, rngs=nnx.Rngs(0)))
  assert model.encoder.depth == 101 and model.encoder.output_stride == 16
  assert model.aspp.rates == (6, 12, 18)
  assert model.aspp.pointwise.conv.kernel.shape == (1, 1, 2048, 256)
  assert model.aspp.project.conv.kernel.shape == (1, 1, 5 * 256, 256)
  assert model.decoder.low_level.conv.kernel.shape == (1, 1, 256, 48)
  assert model.decoder.conv1.conv.kernel.shape == (3, 3, 256 + 48, 256)
  assert model.classifier.kernel.shape == (1, 1, 256, 21)


def test_head_parameters_hand_counted():
  model = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(5, rngs=nnx.Rngs(0), **TINY))
  c2, c5 = 4 * 1, 4 * 8  # ResNet-18 width 4: layer1 has 4 channels, layer4 32.
  a, low, d, k = 8, 3, 6, 5
  bn = lambda n: 2 * n  # scale and bias (running statistics are not Params)
  aspp = ((c5 * a + bn(a))                 # 1x1 branch
          + 3 * (9 * c5 * a + bn(a))       # three 3x3 atrous branches
          + (c5 * a + bn(a))               # image pooling 1x1
          + (5 * a * a + bn(a)))           # projection of the concatenation
  decoder = ((c2 * low + bn(low))          # 48-channel (here 3) low-level projection
             + (9 * (a + low) * d + bn(d)) + (9 * d * d + bn(d)))
  classifier = d * k + k
  assert _num_params(model.aspp) == aspp == 7840
  assert _num_params(model.decoder) == decoder == 960
  assert _num_params(model.classifier) == classifier
  assert _num_params(model) == _num_params(model.encoder) + aspp + decoder + classifier


@pytest.fixture(scope="module")
def tiny_model():
  """A concrete tiny model filled from NumPy: a random nnx init compiles one XLA program
  per parameter shape, which costs minutes on a loaded CPU."""
  model = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(4, output_stride=16,
                                                       rngs=nnx.Rngs(0), **TINY))
  rng = np.random.default_rng(0)
  for path, variable in nnx.iter_graph(model):
    if not isinstance(variable, nnx.Variable):
      continue
    shape, name = variable.shape, path[-1]
    if name == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    elif name in ("scale", "var"):
      value = np.ones(shape)
    else:
      value = np.zeros(shape)
    variable.set_value(jnp.asarray(value, jnp.float32))
  return model


def test_forward_features_do_not_change_logits(tiny_model):
  tiny_model.eval()
  x = jax.random.uniform(jax.random.key(1), (2, 40, 24, 3))
  logits, out = nnx.jit(lambda m, x: (m(x), m(x, return_features=True)))(tiny_model, x)
  assert logits.shape == (2, 40, 24, 4)
  assert np.all(np.isfinite(logits))
  np.testing.assert_array_equal(out.logits, logits)
  assert out.aspp.shape == (2, 3, 2, 8) and out.decoder.shape == (2, 10, 6, 6)


def test_training_mode_updates_batch_statistics(tiny_model):
  tiny_model.train()
  before = np.asarray(tiny_model.aspp.project.bn.mean[...])
  nnx.jit(lambda m, x: m(x))(tiny_model, jax.random.uniform(jax.random.key(2), (2, 32, 32, 3)))
  assert not np.allclose(before, tiny_model.aspp.project.bn.mean[...])
  tiny_model.eval()


def test_with_output_stride_shares_weights(tiny_model):
  tiny_model.eval()
  other = deeplab.with_output_stride(tiny_model, 8)
  assert other.encoder.output_stride == 8
  assert other.aspp.rates == (12, 24, 36)
  np.testing.assert_array_equal(other.classifier.kernel[...], tiny_model.classifier.kernel[...])
  assert other.encoder.bn1.use_running_average
  out = nnx.eval_shape(lambda m, x: m(x, return_features=True), other,
                       jnp.zeros((1, 32, 32, 3)))
  assert out.aspp.shape == (1, 4, 4, 8)


def test_torchvision_weights_load_into_the_encoder(tmp_path):
  # The U-Net's import path works unchanged on `model.encoder` (abstract model: no init).
  target = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(
      3, depth=18, aspp_features=4, low_level_features=2, decoder_features=4,
      rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  arrays = {key: rng.standard_normal(shape).astype(np.float32)
            for key, (_, _, shape) in torchvision_import.torchvision_targets(
                target.encoder).items()}
  path = tmp_path / "resnet18.npz"
  np.savez(path, **arrays)
  torchvision_import.load_torchvision_resnet(target.encoder, path)
  np.testing.assert_array_equal(target.encoder.layer4[1].conv2.kernel[...],
                                np.transpose(arrays["layer4.1.conv2.weight"], (2, 3, 1, 0)))
  np.testing.assert_array_equal(target.encoder.bn1.var[...], arrays["bn1.running_var"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_stride=32), r"output_stride=32 is not supported; valid values: \[8, 16\]"),
    (dict(num_classes=0), "at least 1 class"),
    (dict(decoder_features=0), "decoder_features=0"),
])
def test_bad_options_are_named(kwargs, message):
  options = dict(num_classes=3, **TINY)
  options.update(kwargs)
  with pytest.raises(ValueError, match=message):
    nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(rngs=nnx.Rngs(0), **options))
