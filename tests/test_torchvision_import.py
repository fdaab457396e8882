"""torchvision ResNet weights -> nnx ResNet: numerical parity with a torch forward pass.

torchvision itself is not installed (PyPI's torchvision does not import beside the CPU
torch build used here), so the reference network is written below with plain torch.nn
layers under torchvision's module names; its state_dict has torchvision's keys.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import resnet
from jhseg.models import torchvision_import


def _torch_reference(depth, num_classes, replace_stride_with_dilation=(False, False, False)):
  """torchvision-style ResNet (v1.5) built from torch.nn layers, same module names."""
  torch = pytest.importorskip("torch", reason="torch is needed for the parity test "
                              "(pip install torch==2.13.0)")
  nn = torch.nn

  class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, downsample, dilation):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation,
                             dilation=dilation, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation,
                             bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      identity = x if self.downsample is None else self.downsample(x)
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.bn2(self.conv2(out))
      return self.relu(out + identity)

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride, downsample, dilation):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation,
                             dilation=dilation, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(planes * 4)
      self.relu = nn.ReLU()
      self.downsample = downsample

    def forward(self, x):
      identity = x if self.downsample is None else self.downsample(x)
      out = self.relu(self.bn1(self.conv1(x)))
      out = self.relu(self.bn2(self.conv2(out)))
      out = self.bn3(self.conv3(out))
      return self.relu(out + identity)

  block, layers = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3))}[depth]

  class ResNet(nn.Module):

    def __init__(self):
      super().__init__()
      self.inplanes, self.dilation = 64, 1
      self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
      self.bn1 = nn.BatchNorm2d(64)
      self.relu = nn.ReLU()
      self.maxpool = nn.MaxPool2d(3, 2, padding=1)
      self.layer1 = self._make_layer(64, layers[0], 1, False)
      self.layer2 = self._make_layer(128, layers[1], 2, replace_stride_with_dilation[0])
      self.layer3 = self._make_layer(256, layers[2], 2, replace_stride_with_dilation[1])
      self.layer4 = self._make_layer(512, layers[3], 2, replace_stride_with_dilation[2])
      self.avgpool = nn.AdaptiveAvgPool2d(1)
      self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, planes, blocks, stride, dilate):
      # As torchvision: a dilated stage's first block keeps the previous dilation.
      previous_dilation = self.dilation
      if dilate:
        self.dilation *= stride
        stride = 1
      downsample = None
      if stride != 1 or self.inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion))
      modules = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
      self.inplanes = planes * block.expansion
      modules += [block(self.inplanes, planes, 1, None, self.dilation)
                  for _ in range(1, blocks)]
      return nn.Sequential(*modules)

    def forward(self, x):
      x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
      x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
      return self.fc(torch.flatten(self.avgpool(x), 1)), x

  torch.manual_seed(0)
  model = ResNet()
  with torch.no_grad():  # random BatchNorm affine parameters and running statistics
    for module in model.modules():
      if isinstance(module, nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.1)
        module.running_mean.normal_(0.0, 0.1)
        module.running_var.uniform_(0.5, 1.5)
  return torch, model.eval()


def _relative_error(actual, expected):
  return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _parity(tmp_path, depth, output_stride, suffix):
  replace = resnet.OUTPUT_STRIDES[output_stride]
  torch, reference = _torch_reference(depth, 10, replace)
  path = tmp_path / f"resnet{depth}.pth"
  torch.save(reference.state_dict(), path)
  if suffix == ".npz":
    torchvision_import.torch_state_dict_to_npz(path, tmp_path / "weights.npz")
    path = tmp_path / "weights.npz"
  model = torchvision_import.resnet_from_torchvision(
      path, depth=depth, output_stride=output_stride, num_classes=10)
  model.eval()
  images = np.random.default_rng(0).normal(size=(2, 3, 40, 36)).astype(np.float32)
  with torch.no_grad():
    logits_ref, c5_ref = (t.numpy() for t in reference(torch.from_numpy(images)))
  c5_ref = c5_ref.transpose(0, 2, 3, 1)
  nhwc = jnp.asarray(images.transpose(0, 2, 3, 1))
  logits, c5 = nnx.jit(lambda m, x: (m(x), m.features(x).c5))(model, nhwc)
  assert c5.shape == c5_ref.shape
  assert _relative_error(np.asarray(c5), c5_ref) < 1e-4
  assert _relative_error(np.asarray(logits), logits_ref) < 1e-4


def test_resnet50_parity_with_torch_forward(tmp_path):
  _parity(tmp_path, 50, 32, ".pth")


def test_dilated_resnet50_parity_output_stride_8(tmp_path):
  _parity(tmp_path, 50, 8, ".pth")


def test_resnet18_parity_through_npz_export(tmp_path):
  _parity(tmp_path, 18, 16, ".npz")


def _fake_state_dict(depth, num_classes=None):
  """Random arrays of the shapes torchvision uses, keyed like torchvision."""
  model = nnx.eval_shape(lambda: resnet.ResNet(depth, num_classes=num_classes,
                                               rngs=nnx.Rngs(0)))
  rng = np.random.default_rng(0)
  state = {key: rng.normal(size=shape).astype(np.float32)
           for key, (_, _, shape) in torchvision_import.torchvision_targets(model).items()}
  state["bn1.num_batches_tracked"] = np.array(5)
  return state


def test_npz_mapping_transposes_and_ignores_fc_for_an_encoder(tmp_path):
  state = _fake_state_dict(18, num_classes=7)
  np.savez(tmp_path / "w.npz", **state)
  encoder = torchvision_import.resnet_from_torchvision(tmp_path / "w.npz", depth=18)
  assert encoder.fc is None
  # OIHW -> HWIO for convolutions, BN statistics copied verbatim.
  np.testing.assert_array_equal(np.asarray(encoder.layer2[0].conv1.kernel[...]),
                                state["layer2.0.conv1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(np.asarray(encoder.layer3[0].downsample.bn.var[...]),
                                state["layer3.0.downsample.1.running_var"])
  classifier = torchvision_import.resnet_from_torchvision(tmp_path / "w.npz", depth=18,
                                                          num_classes=7)
  np.testing.assert_array_equal(np.asarray(classifier.fc.kernel[...]),
                                state["fc.weight"].T)
  # Every variable is set: nothing abstract is left from the shape-only construction.
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(classifier)))


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path):
  good = _fake_state_dict(18, num_classes=7)
  np.savez(tmp_path / "good.npz", **good)
  model = torchvision_import.resnet_from_torchvision(tmp_path / "good.npz", depth=18,
                                                     num_classes=7)
  state = dict(good)
  del state["layer1.1.bn2.running_mean"]
  state["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  state["fc.weight"] = np.zeros((1000, 512), np.float32)
  state["conv1.weight"] = np.zeros_like(good["conv1.weight"])
  np.savez(tmp_path / "bad.npz", **state)
  with pytest.raises(ValueError) as error:
    torchvision_import.load_torchvision_resnet(model, tmp_path / "bad.npz")
  message = str(error.value)
  assert "bad.npz" in message
  assert "missing keys: layer1.1.bn2.running_mean" in message
  assert "unexpected keys: layer5.0.conv1.weight" in message
  assert "shape mismatch for fc.weight: file has (1000, 512)" in message
  # A failed load leaves the model unchanged.
  np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]),
                                good["conv1.weight"].transpose(2, 3, 1, 0))


def test_wrong_depth_is_reported(tmp_path):
  np.savez(tmp_path / "r18.npz", **_fake_state_dict(18))
  with pytest.raises(ValueError, match="ResNet-34.*missing keys: layer1.2.bn1.bias"):
    torchvision_import.resnet_from_torchvision(tmp_path / "r18.npz", depth=34)


def test_weights_into_a_non_paper_width_name_the_width_and_the_file(tmp_path):
  np.savez(tmp_path / "resnet18_imagenet.npz", **_fake_state_dict(18))
  narrow = nnx.eval_shape(lambda: resnet.ResNet(18, width=16, rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError) as error:
    torchvision_import.load_torchvision_resnet(narrow, tmp_path / "resnet18_imagenet.npz")
  message = str(error.value)
  assert "resnet18_imagenet.npz" in message
  assert "width=16" in message and "base width 64" in message
  # The same file loads into the paper width.
  torchvision_import.load_torchvision_resnet(
      nnx.eval_shape(lambda: resnet.ResNet(18, rngs=nnx.Rngs(0))),
      tmp_path / "resnet18_imagenet.npz")


def test_resnet50_key_count_matches_torchvision():
  # torchvision's resnet50 has 161 parameter tensors and 53 BatchNorm layers, each with
  # running_mean, running_var and num_batches_tracked buffers: 320 state-dict entries.
  model = nnx.eval_shape(lambda: resnet.ResNet(50, num_classes=1000, rngs=nnx.Rngs(0)))
  keys = torchvision_import.torchvision_targets(model)
  running = [k for k in keys if k.endswith(("running_mean", "running_var"))]
  assert len(keys) - len(running) == 161 and len(running) == 2 * 53
  assert {"layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"} <= set(keys)


def test_missing_file_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere.pth"):
    torchvision_import.read_state_dict(tmp_path / "nowhere.pth")


def test_module_does_not_import_torch_at_import_time():
  import subprocess
  import sys
  code = ("import sys, jhseg.models.torchvision_import; "
          "sys.exit(1 if 'torch' in sys.modules else 0)")
  assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
