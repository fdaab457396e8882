"""Loads torchvision ResNet weights (a `state_dict` file) into `jhseg.models.resnet.ResNet`.

Typical use, for the ImageNet initialisation of an encoder:

  # where torch is available:  torch.save(torchvision.models.resnet50(
  #     weights="IMAGENET1K_V1").state_dict(), "resnet50.pth")
  encoder = resnet_from_torchvision("resnet50.pth", depth=50, output_stride=16)
  # or, into an existing model (e.g. the encoder of a U-Net):
  load_torchvision_resnet(unet.encoder, "resnet50.pth")

Accepted files: a `torch.save`d state dict (`.pth`/`.pt`/anything not `.npz`; torch is
imported only then), or a `.npz` whose array names are the state-dict keys
(`torch_state_dict_to_npz` writes one, so machines without torch can load it).

Conversions: conv weights OIHW -> HWIO; BatchNorm weight/bias/running_mean/running_var
-> scale/bias/mean/var; fc weight (out, in) -> kernel (in, out). `num_batches_tracked`
entries are ignored. The `fc.*` entries are loaded when the model has a classifier and
skipped when it is an encoder (`num_classes=None`), the usual ImageNet initialisation.
torchvision's ResNets all have the paper's base width 64: a model of another
`width` (a cheap CPU configuration) cannot take them and is refused up front.
"""

from __future__ import annotations

import os
import pathlib
from typing import Callable, Mapping, Sequence

from flax import nnx
import jax.numpy as jnp
import numpy as np

from jhseg.models import resnet

_Transform = Callable[[np.ndarray], np.ndarray]
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_MAX_LISTED = 12


def _oihw_to_hwio(weight: np.ndarray) -> np.ndarray:
  return np.transpose(weight, (2, 3, 1, 0))


def _identity(array: np.ndarray) -> np.ndarray:
  return array


def _add_conv(targets, name: str, conv: nnx.Conv) -> None:
  targets[f"{name}.weight"] = (conv.kernel, _oihw_to_hwio,
                               tuple(conv.kernel.shape[i] for i in (3, 2, 0, 1)))


def _add_batch_norm(targets, name: str, bn: nnx.BatchNorm) -> None:
  for torch_name, variable in (("weight", bn.scale), ("bias", bn.bias),
                               ("running_mean", bn.mean), ("running_var", bn.var)):
    targets[f"{name}.{torch_name}"] = (variable, _identity, variable.shape)


def torchvision_targets(model: resnet.ResNet
                        ) -> dict[str, tuple[nnx.Variable, _Transform, tuple[int, ...]]]:
  """torchvision state-dict key -> (nnx variable, conversion, expected torch shape)."""
  targets: dict = {}
  _add_conv(targets, "conv1", model.conv1)
  _add_batch_norm(targets, "bn1", model.bn1)
  for stage_index, stage in enumerate(model.stages, start=1):
    for block_index, block in enumerate(stage):
      prefix = f"layer{stage_index}.{block_index}"
      convs = [name for name in ("conv1", "conv2", "conv3") if hasattr(block, name)]
      for number, conv_name in enumerate(convs, start=1):
        _add_conv(targets, f"{prefix}.{conv_name}", getattr(block, conv_name))
        _add_batch_norm(targets, f"{prefix}.bn{number}", getattr(block, f"bn{number}"))
      if block.downsample is not None:
        _add_conv(targets, f"{prefix}.downsample.0", block.downsample.conv)
        _add_batch_norm(targets, f"{prefix}.downsample.1", block.downsample.bn)
  if model.fc is not None:
    kernel_shape = model.fc.kernel.shape
    targets["fc.weight"] = (model.fc.kernel, np.transpose, kernel_shape[::-1])
    targets["fc.bias"] = (model.fc.bias, _identity, model.fc.bias.shape)
  return targets


def _load_torch(path: pathlib.Path, trust_pickle: bool):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as error:
    raise ImportError(
        f"{path}: reading a torch file needs the `torch` package; install it, or convert "
        "the file to .npz (array names = state-dict keys, e.g. with torch_state_dict_to_npz) "
        "on a machine that has torch") from error
  try:
    return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as error:  # noqa: BLE001 - torch raises several unpickling errors
    raise ValueError(f"{path}: could not be read as a weights-only PyTorch file "
                     f"({type(error).__name__}: {error}); a checkpoint that pickles other "
                     f"objects (e.g. DeiT's argparse options) needs trust_pickle=True, for a "
                     f"file you trust") from error


def _to_numpy(state: Mapping, source: str) -> dict[str, np.ndarray]:
  arrays = {}
  for key, value in state.items():
    if hasattr(value, "detach"):
      value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
      raise ValueError(f"{source}: entry {key!r} should be a tensor, got "
                       f"{type(value).__name__}")
    arrays[key] = value
  return arrays


def read_torch_weights(path: str | os.PathLike, *, what: str = "torch weights file",
                       trust_pickle: bool = False,
                       entries: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """A torch state dict (`.pth`, `.pt`, ...) or its `.npz` export as NumPy arrays.

  `entries`: keys under which a training checkpoint nests its state dict (the first
  present one is read; e.g. ("state_dict", "model")). `what` names the file in errors.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{what} not found: {path}")
  if path.suffix == ".npz":
    with np.load(path, allow_pickle=False) as archive:
      return {key: archive[key] for key in archive.files}
  contents = _load_torch(path, trust_pickle)
  if not isinstance(contents, Mapping):
    raise ValueError(f"{path}: expected a state dict (a mapping from parameter names to "
                     f"tensors, as saved by torch.save(model.state_dict())) or a checkpoint "
                     f"dict holding one, got {type(contents).__name__}")
  for entry in entries:
    if isinstance(contents.get(entry), Mapping):
      return _to_numpy(contents[entry], f"{path} ['{entry}']")
  return _to_numpy(contents, str(path))


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a torch state dict (`.pth`, `.pt`, ...) or its `.npz` export as NumPy arrays."""
  return read_torch_weights(path, what="torchvision weights file")


def torch_state_dict_to_npz(source: str | os.PathLike, destination: str | os.PathLike
                            ) -> None:
  """Converts a `torch.save`d state dict to a `.npz` that loads without torch."""
  np.savez(destination, **read_state_dict(source))


def _listed(keys) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:_MAX_LISTED])
  return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def load_torchvision_resnet(model: resnet.ResNet, path: str | os.PathLike) -> None:
  """Copies the weights and BatchNorm statistics of a torchvision ResNet file into `model`.

  The file must match the model exactly (same depth, base width 64; `fc` of the same
  size if the model has one): any missing or unexpected key, or any shape mismatch,
  raises a ValueError naming the file and every offending key, and leaves the model
  unchanged. Dilation (output stride) does not change the weights, so any output
  stride can be loaded.
  """
  if model.width != resnet.PAPER_WIDTH:
    raise ValueError(
        f"{path}: torchvision ResNet weights have base width {resnet.PAPER_WIDTH}, but "
        f"this ResNet-{model.depth} has width={model.width}; build the model with "
        f"width={resnet.PAPER_WIDTH} (config.model.width) to import them, or train it "
        "from scratch (no pretrained file)")
  state = read_state_dict(path)
  targets = torchvision_targets(model)
  present = {key for key in state if not key.endswith(_IGNORED_SUFFIXES)}
  if model.fc is None:
    present -= {"fc.weight", "fc.bias"}
  missing, unexpected = set(targets) - present, present - set(targets)
  problems = []
  if missing:
    problems.append(f"missing keys: {_listed(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listed(unexpected)}")
  for key in sorted(present & set(targets)):
    expected_shape = targets[key][2]
    if tuple(state[key].shape) != tuple(expected_shape):
      problems.append(f"shape mismatch for {key}: file has {tuple(state[key].shape)}, "
                      f"ResNet-{model.depth} expects {tuple(expected_shape)}")
  if problems:
    raise ValueError(f"{path}: not a torchvision ResNet-{model.depth} state dict for "
                     "this model; " + "; ".join(problems))
  for key, (variable, transform, _) in targets.items():
    value = transform(np.asarray(state[key], dtype=np.float32))
    variable.set_value(jnp.asarray(value, dtype=variable.dtype))


def resnet_from_torchvision(path: str | os.PathLike, *, depth: int = 50,
                            output_stride: int = 32,
                            multi_grid: Sequence[int] | None = None,
                            num_classes: int | None = None,
                            dtype: jnp.dtype | None = None) -> resnet.ResNet:
  """A `ResNet` holding the weights of a torchvision file, without a random init.

  The model is built abstractly (`nnx.eval_shape`) and every variable is then set from
  the file (the loader covers all of a ResNet's state), which skips initialising
  tens of millions of parameters only to overwrite them.
  """
  model = nnx.eval_shape(lambda: resnet.ResNet(
      depth, output_stride=output_stride, multi_grid=multi_grid,
      num_classes=num_classes, dtype=dtype, rngs=nnx.Rngs(0)))
  load_torchvision_resnet(model, path)
  return model
