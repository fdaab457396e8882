"""Ultrametric U-Net: output shapes and dtypes, any input size, modes, and learning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jhseg import losses
from jhseg.models import torchvision_import
from jhseg.models import unet


@pytest.fixture(scope="module")
def small_unet():
  """ResNet-18 encoder of base width 16, narrow decoder: a cheap U-Net on CPU."""
  return unet.UNet(3, depth=18, decoder_features=(32, 16, 16, 8, 8), width=16,
                   rngs=nnx.Rngs(0))


# One jitted forward for the whole file so that equal shapes and modes compile once.
_forward = nnx.jit(lambda model, images: model(images))


@pytest.mark.parametrize("num_levels", [3, 2])
def test_resnet50_unet_logits_at_full_resolution(num_levels):
  model = nnx.eval_shape(lambda: unet.UNet(num_levels, rngs=nnx.Rngs(0)))
  logits = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((2, 32, 32, 3)))
  assert logits.shape == (2, 32, 32, num_levels)
  assert logits.dtype == jnp.float32
  assert model.encoder.depth == 50 and model.encoder.fc is None


def test_bfloat16_compute_still_returns_float32_logits():
  model = nnx.eval_shape(lambda: unet.UNet(3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)))
  logits = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((1, 32, 32, 3)))
  assert logits.dtype == jnp.float32


@pytest.mark.parametrize("height, width", [(32, 32), (30, 45)])
def test_any_input_size_gives_logits_of_that_size(small_unet, height, width):
  small_unet.eval()
  images = jax.random.uniform(jax.random.key(0), (2, height, width, 3))
  logits = _forward(small_unet, images)
  assert logits.shape == (2, height, width, 3) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_eval_mode_is_per_image_and_train_mode_uses_batch_statistics(small_unet):
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  other_batch = images.at[1].set(1.0 - images[1])
  small_unet.eval()
  np.testing.assert_allclose(_forward(small_unet, images)[0],
                             _forward(small_unet, other_batch)[0], rtol=1e-4, atol=1e-5)
  model = nnx.clone(small_unet)  # train mode updates BatchNorm statistics
  model.train()
  assert not np.allclose(_forward(model, images)[0], _forward(model, other_batch)[0],
                         atol=1e-3)


def test_encoder_takes_torchvision_weights(tmp_path, small_unet):
  # The paper width (64) loads torchvision's layout; a narrow encoder refuses it.
  model = nnx.eval_shape(lambda: unet.UNet(3, depth=18, rngs=nnx.Rngs(0)))
  state = {key: np.full(shape, 0.5, np.float32) for key, (_, _, shape)
           in torchvision_import.torchvision_targets(model.encoder).items()}
  np.savez(tmp_path / "r18.npz", **state)
  torchvision_import.load_torchvision_resnet(model.encoder, tmp_path / "r18.npz")
  np.testing.assert_array_equal(model.encoder.layer4[1].bn2.mean[...], 0.5)
  with pytest.raises(ValueError, match=r"r18\.npz.*width=16"):
    torchvision_import.load_torchvision_resnet(small_unet.encoder, tmp_path / "r18.npz")


@pytest.mark.parametrize("depth, width, skips", [
    (18, 64, (256, 128, 64, 64)), (18, 16, (64, 32, 16, 16)),
    (50, 64, (1024, 512, 256, 64)), (50, 16, (256, 128, 64, 16))])
def test_decoder_reads_skip_channels_from_the_encoder(depth, width, skips):
  decoder = (32, 16, 16, 8, 8)
  model = nnx.eval_shape(lambda: unet.UNet(3, depth=depth, decoder_features=decoder,
                                           width=width, rngs=nnx.Rngs(0)))
  assert model.encoder.width == width
  # Block i sees the previous output (c5 for the first) and the skip c4, c3, c2, c1.
  inputs = (8 * width * (4 if depth == 50 else 1),) + decoder[:4]
  for block, previous, skip, out in zip(model.decoder, inputs, skips, decoder):
    assert block.conv1.conv.kernel.shape == (3, 3, previous + skip, out)
  assert model.decoder[4].conv1.conv.kernel.shape == (3, 3, decoder[3], decoder[4])
  logits = nnx.eval_shape(lambda m, x: m(x), model, jnp.zeros((1, 30, 45, 3)))
  assert logits.shape == (1, 30, 45, 3)


def test_a_few_steps_fit_a_tiny_edge_target(small_unet):
  """Gradients reach every parameter, are finite, and Adam lowers eq. (1)."""
  model = nnx.clone(small_unet)
  model.train()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 32, 32, 3)), jnp.float32)
  # Edge targets of two nested partitions: object boundary column (level 2),
  # part boundary row (level 1), 0 elsewhere.
  h_target = np.zeros((2, 32, 31), np.int32)
  h_target[:, :, 15] = 2
  v_target = np.zeros((2, 31, 32), np.int32)
  v_target[:, 15, :] = 1
  targets = (jnp.asarray(h_target), jnp.asarray(v_target))

  def loss_fn(m):
    edge_log_probs = losses.edge_level_log_probabilities(m(images))
    return jnp.mean(losses.balanced_edge_cross_entropy(edge_log_probs, targets))

  optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def step(m, opt):
    loss, grads = nnx.value_and_grad(loss_fn)(m)
    opt.update(m, grads)
    return loss, grads

  first, grads = step(model, optimizer)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert all(np.any(g != 0) for g in leaves)  # every parameter receives a gradient
  for _ in range(3):
    last, _ = step(model, optimizer)
  assert last < first


def test_bad_configurations_are_reported():
  with pytest.raises(ValueError, match="num_levels=1"):
    unet.UNet(1, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="5 values"):
    unet.UNet(3, decoder_features=(16, 8), rngs=nnx.Rngs(0))
  model = nnx.eval_shape(lambda: unet.UNet(3, depth=18, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
    model(jnp.zeros((32, 32, 3)))
