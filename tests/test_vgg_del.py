"""jhseg.models.vgg_del: shapes, side normalisation, torchvision VGG16 import with parity.

torchvision is not importable here, so the reference is torchvision's `vgg16().features`
written with plain torch.nn layers under the same module indices, with DEL's changes
(pool4 3x3 stride 1 padding 1, conv5 dilated by 2) applied to it.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import vgg_del


def _numpy_initialised(width):
  """A model with NumPy-random parameters: skips compiling one JAX RNG program per
  parameter shape (tens of seconds each on the shared CPU); values are not under test."""
  model = nnx.eval_shape(lambda: vgg_del.VggDel(width=width, rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  for path, variable in nnx.iter_graph(model):
    if isinstance(variable, nnx.Param):
      if path[-1] == "scale":
        value = np.full(variable.shape, vgg_del.NORM_SCALE_INIT)
      else:
        value = rng.normal(size=variable.shape) * 0.3
      variable.set_value(jnp.asarray(value, jnp.float32))
  return model


def test_shapes_and_width():
  model = _numpy_initialised(4)
  images = jnp.asarray(np.random.default_rng(0).random((2, 21, 30, 3)), jnp.float32)
  feats, sides, embedding = nnx.jit(
      lambda m, x: (m.backbone(x), m.side_features(x), m(x)))(model, images)
  assert [f.shape[1:3] for f in feats] == [(21, 30), (10, 15), (5, 7), (2, 3), (2, 3)]
  assert [f.shape[-1] for f in feats] == [4, 8, 16, 32, 32]
  assert sides.shape == (2, 21, 30, 2 + 4 + 4 + 8 + 8)
  # side 1 (full resolution, not interpolated) is L2-normalised and scaled by 20 at init
  # (0 where its tiny 2 channels are all 0)
  norms = np.asarray(jnp.linalg.norm(sides[..., :2], axis=-1))
  assert norms.max() < 20 + 1e-3 and np.median(norms) > 19.99
  x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 5)), jnp.float32)
  np.testing.assert_allclose(vgg_del.ChannelL2Norm(5)(x), 20 * x / jnp.linalg.norm(
      x, axis=-1, keepdims=True), rtol=1e-5)
  assert embedding.shape == (2, 21, 30, 64)
  with pytest.raises(ValueError, match="width"):
    vgg_del.VggDel(width=0, rngs=nnx.Rngs(0))


def test_padding_does_not_reach_the_valid_part():
  """Fixed-shape batches: an image padded at the bottom/right (with anything) embeds as
  the image alone; before the valid sizes were passed the black padding changed the
  embedding near the padded border by as much as its own magnitude."""
  model = _numpy_initialised(4)
  rng = np.random.default_rng(0)
  first, second = rng.random((13, 19, 3)), rng.random((10, 16, 3))  # odd sizes: pools
  batch = np.full((2, 17, 24, 3), 0.7, np.float32)  # round down before the padding
  batch[0, :13, :19], batch[1, :10, :16] = first, second
  sizes = jnp.asarray([[13, 19], [10, 16]], jnp.int32)
  fn = nnx.jit(lambda m, x, s: m(x, s))
  padded = np.asarray(fn(model, jnp.asarray(batch), sizes))
  alone = [np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(x[None], jnp.float32)))[0]
           for x in (first, second)]
  scale = np.abs(alone[0]).max()
  np.testing.assert_allclose(padded[0, :13, :19], alone[0], atol=1e-5 * scale, rtol=0)
  np.testing.assert_allclose(padded[1, :10, :16], alone[1], atol=1e-5 * scale, rtol=0)
  # Without the sizes the padding leaks in (the defect the sizes fix).
  leaked = np.asarray(fn(model, jnp.asarray(batch), jnp.asarray([[17, 24]] * 2)))
  assert np.abs(leaked[0, :13, :19] - alone[0]).max() > 0.05 * scale


def test_resize_valid_matches_jax_image_resize_per_image():
  rng = np.random.default_rng(1)
  coarse = jnp.asarray(rng.normal(size=(2, 6, 7, 3)), jnp.float32)
  whole = vgg_del.resize_valid(coarse, None, None, (23, 29))
  np.testing.assert_allclose(whole, jax.image.resize(coarse, (2, 23, 29, 3), "bilinear"),
                             atol=1e-5)
  # Image 1: only its top-left 4 x 5 is valid, resized to 17 x 21 of the 23 x 29 output.
  sizes, out_sizes = jnp.asarray([[6, 7], [4, 5]]), jnp.asarray([[23, 29], [17, 21]])
  got = vgg_del.resize_valid(coarse, sizes, out_sizes, (23, 29))
  np.testing.assert_allclose(got[0], whole[0], atol=1e-6)
  np.testing.assert_allclose(got[1, :17, :21], jax.image.resize(
      coarse[1, :4, :5], (17, 21, 3), "bilinear"), atol=1e-5)


def _abstract_full_model():
  return nnx.eval_shape(lambda: vgg_del.VggDel(width=64, rngs=nnx.Rngs(0)))


def _torch_reference_features():
  torch = pytest.importorskip("torch")
  nn = torch.nn
  layers, cin = [], 3
  for stage_index, stage in enumerate(vgg_del.STAGES):
    if stage_index in (1, 2, 3):
      layers.append(nn.MaxPool2d(2, 2))
    elif stage_index == 4:
      layers.append(nn.MaxPool2d(3, 1, padding=1))  # DEL's pool4
    for channels in stage:
      dilation = 2 if stage_index == 4 else 1
      layers += [nn.Conv2d(cin, channels, 3, padding=dilation, dilation=dilation),
                 nn.ReLU(inplace=True)]
      cin = channels
  layers.append(nn.MaxPool2d(2, 2))  # pool5: in torchvision's features, cut by DEL
  features = nn.Sequential(*layers)
  # index layout must be torchvision's: convs at 0, 2, 5, ..., pools at 4, 9, 16, 23, 30
  assert [i for i, l in enumerate(features) if isinstance(l, nn.Conv2d)] == [
      i for stage in vgg_del.TORCHVISION_CONV_INDICES for i in stage]
  return torch, features


def test_torchvision_import_parity(tmp_path):
  torch, features = _torch_reference_features()
  torch.manual_seed(0)
  state = {f"features.{k}": v for k, v in features.state_dict().items()}
  state["classifier.0.weight"] = torch.zeros(4, 3)
  path = tmp_path / "vgg16.pth"
  torch.save(state, path)

  model = _abstract_full_model()  # every backbone variable is set from the file
  skipped = vgg_del.load_torchvision_vgg16(model, path)
  assert skipped == ["classifier.0.weight"]
  image = np.random.default_rng(0).random((1, 36, 44, 3)).astype(np.float32)
  ours = jax.jit(lambda x: model.backbone(x))(jnp.asarray(image))

  mean, std = np.array(vgg_del.IMAGENET_MEAN), np.array(vgg_del.IMAGENET_STD)
  x = torch.from_numpy(((image - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
  taps = {3: 0, 8: 1, 15: 2, 22: 3, 29: 4}  # ReLU after conv1_2, 2_2, 3_3, 4_3, 5_3
  with torch.no_grad():
    for index, layer in enumerate(features):
      x = layer(x)
      if index in taps:
        reference = x.permute(0, 2, 3, 1).numpy()
        got = np.asarray(ours[taps[index]])
        assert got.shape == reference.shape
        scale = np.abs(reference).max()
        np.testing.assert_allclose(got, reference, atol=2e-4 * scale, rtol=0)


def test_import_errors(tmp_path):
  torch, features = _torch_reference_features()
  state = {f"features.{k}": v for k, v in features.state_dict().items()}
  del state["features.28.bias"]
  path = tmp_path / "broken.pth"
  torch.save(state, path)
  with pytest.raises(ValueError, match="features.28.bias"):
    vgg_del.load_torchvision_vgg16(_abstract_full_model(), path)
  with pytest.raises(ValueError, match="width=64"):
    vgg_del.load_torchvision_vgg16(
        nnx.eval_shape(lambda: vgg_del.VggDel(width=8, rngs=nnx.Rngs(0))), path)
