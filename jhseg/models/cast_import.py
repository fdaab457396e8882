"""Loads the authors' PyTorch CAST checkpoints (twke18/CAST) into `jhseg.models.cast.CAST`.

Accepted inputs: a checkpoint file as saved by their MoCo-v3 training (a dict whose
'state_dict' holds keys prefixed `module.base_encoder.` / `module.momentum_encoder.`,
plus the predictor's), by their DeiT training (a dict whose 'model' is the state dict),
a bare state dict (`torch.save(model.state_dict())`), or a `.npz` of any of these flat
state dicts (array names = keys) for machines without torch.

Key layout (timm 0.4.12 VisionTransformer + the authors' modules):
  cls_token                                  (1, 1, D)
  patch_embed.proj.{0,3,6,9}.weight          stem 3x3 convs, OIHW
  patch_embed.proj.{1,4,7,10}.*              their BatchNorms (weight, bias, running_*)
  patch_embed.proj.12.{weight,bias}          the 1x1 conv
  blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*
  pool{l}.pool_block.centroid_fc.{norm,attn.qkv,attn.proj}.*, ...centroid_fc.bias
  pool{l}.pool_block.fc1.{0 (LayerNorm), 1 (Linear)}.*, ...fc2.{0, 1}.*
  norm.*, head.* (a Linear in DeiT checkpoints; MoCo's projector MLP otherwise)
The authors' model also registers its blocks a second time per level, as slices of
`blocks` (torch keeps the original indices: `blocks2.3.*` is `blocks.3.*` when level 1
has 3 blocks); those duplicates are checked to equal `blocks.{i}`.
Position embedding (`CASTConfig.position_embedding`):
  "sincos" (MoCo): `pos_embed` (1, G*G, D) / `pe_token` (1, 1, D) are fixed buffers, not
    loaded; pos_embed, when its grid is square with the model's width, is checked against
    jhseg's sin-cos embedding (catches a layout mismatch or a DeiT table loaded into a
    sin-cos model).
  "learned" (DeiT): `pos_embed` (1, 1 + G*G, D), row 0 for the class token, is loaded
    as is; G must equal the model's `position_grid` (the model resizes the grid part to
    other stem grids itself); a `pe_token` is refused (a MoCo checkpoint).

Conversions: Linear weight (out, in) -> kernel (in, out); conv OIHW -> HWIO;
LayerNorm/BatchNorm weight -> scale; BatchNorm running_mean/var -> mean/var.
Head keys are loaded when the model has a linear head and ignored otherwise (the
MoCo projector belongs to the training task, not to the encoder).
"""
from __future__ import annotations

import os
import re
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from flax import nnx

from jhseg.models import cast as cast_model
from jhseg.models import torchvision_import

ENCODER_PREFIXES = {"base": "module.base_encoder.", "momentum": "module.momentum_encoder.",
                    "deit": ""}
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_FIXED_KEYS = ("pos_embed", "pe_token")
_MAX_LISTED = 12

_Transform = Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
  return x


def _oihw_to_hwio(x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (2, 3, 1, 0))


def _add(targets, key: str, variable: nnx.Variable, transform: _Transform, torch_shape) -> None:
  targets[key] = (variable, transform, tuple(torch_shape))


def _add_linear(targets, name: str, layer: nnx.Linear) -> None:
  _add(targets, f"{name}.weight", layer.kernel, np.transpose, layer.kernel.shape[::-1])
  _add(targets, f"{name}.bias", layer.bias, _identity, layer.bias.shape)


def _add_layer_norm(targets, name: str, norm: nnx.LayerNorm) -> None:
  _add(targets, f"{name}.weight", norm.scale, _identity, norm.scale.shape)
  _add(targets, f"{name}.bias", norm.bias, _identity, norm.bias.shape)


def _add_attention(targets, name: str, attn) -> None:
  _add_linear(targets, f"{name}.qkv", attn.qkv)
  _add_linear(targets, f"{name}.proj", attn.proj)


def cast_targets(model: cast_model.CAST
                 ) -> dict[str, tuple[nnx.Variable, _Transform, tuple[int, ...]]]:
  """Checkpoint key -> (nnx variable, conversion, expected torch shape)."""
  targets: dict = {}
  _add(targets, "cls_token", model.cls_token, _identity, model.cls_token.shape)
  stem = model.patch_embed
  for i, (conv, bn) in enumerate(zip(stem.convs, stem.norms)):
    kernel = conv.kernel
    _add(targets, f"patch_embed.proj.{3 * i}.weight", kernel, _oihw_to_hwio,
         tuple(kernel.shape[j] for j in (3, 2, 0, 1)))
    for torch_name, variable in (("weight", bn.scale), ("bias", bn.bias),
                                 ("running_mean", bn.mean), ("running_var", bn.var)):
      _add(targets, f"patch_embed.proj.{3 * i + 1}.{torch_name}", variable, _identity,
           variable.shape)
  proj = stem.proj
  _add(targets, "patch_embed.proj.12.weight", proj.kernel, _oihw_to_hwio,
       tuple(proj.kernel.shape[j] for j in (3, 2, 0, 1)))
  _add(targets, "patch_embed.proj.12.bias", proj.bias, _identity, proj.bias.shape)
  blocks = [block for stage in model.stages for block in stage]
  for i, block in enumerate(blocks):
    _add_layer_norm(targets, f"blocks.{i}.norm1", block.norm1)
    _add_attention(targets, f"blocks.{i}.attn", block.attn)
    _add_layer_norm(targets, f"blocks.{i}.norm2", block.norm2)
    _add_linear(targets, f"blocks.{i}.mlp.fc1", block.mlp.fc1)
    _add_linear(targets, f"blocks.{i}.mlp.fc2", block.mlp.fc2)
  for level, pool in enumerate(model.pools, start=1):
    prefix = f"pool{level}.pool_block"
    _add_layer_norm(targets, f"{prefix}.centroid_fc.norm", pool.centroid_fc.norm)
    _add_attention(targets, f"{prefix}.centroid_fc.attn", pool.centroid_fc.attn)
    _add(targets, f"{prefix}.centroid_fc.bias", pool.centroid_fc.bias, _identity,
         pool.centroid_fc.bias.shape)
    _add_layer_norm(targets, f"{prefix}.fc1.0", pool.fc1.norm)
    _add_linear(targets, f"{prefix}.fc1.1", pool.fc1.linear)
    _add_layer_norm(targets, f"{prefix}.fc2.0", pool.fc2.norm)
    _add_linear(targets, f"{prefix}.fc2.1", pool.fc2.linear)
  _add_layer_norm(targets, "norm", model.norm)
  if model.pos_embed is not None:
    _add(targets, "pos_embed", model.pos_embed, _identity, model.pos_embed.shape)
  if model.head is not None:
    _add_linear(targets, "head", model.head)
  return targets


def read_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False
                    ) -> dict[str, np.ndarray]:
  """The flat state dict of a checkpoint file ('state_dict' / 'model' entry or bare)."""
  return torchvision_import.read_torch_weights(path, what="CAST checkpoint",
                                               trust_pickle=trust_pickle,
                                               entries=("state_dict", "model"))


def encoder_state(state: Mapping[str, np.ndarray], encoder: str = "base",
                  source: str = "state dict") -> dict[str, np.ndarray]:
  """The entries of one encoder with its prefix removed.

  encoder: 'base' (MoCo's `module.base_encoder.`), 'momentum' (`module.momentum_encoder.`)
  or 'deit' (no prefix; a leading `module.` from DistributedDataParallel is removed).
  """
  if encoder not in ENCODER_PREFIXES:
    raise ValueError(f"unknown encoder {encoder!r}; valid names: {', '.join(ENCODER_PREFIXES)}")
  prefix = ENCODER_PREFIXES[encoder]
  if not prefix:
    if all(key.startswith("module.") for key in state):
      return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)
  selected = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
  if not selected:
    prefixes = sorted({".".join(key.split(".")[:2]) for key in state})
    raise ValueError(f"{source}: no key starts with {prefix!r} (encoder={encoder!r}); key "
                     f"prefixes found: {_listed(prefixes)}")
  return selected


def _listed(keys) -> str:
  keys = sorted(keys)
  shown = ", ".join(keys[:_MAX_LISTED])
  return shown + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


_LEVEL_BLOCK = re.compile(r"^blocks(\d+)\.(\d+)\.(.*)$")


def _check_fixed_and_duplicates(model: cast_model.CAST, state: Mapping[str, np.ndarray],
                                problems: list[str]) -> set[str]:
  """Checks `blocks{l}.{j}` duplicates and pos_embed; returns the keys they account for."""
  handled = set()
  starts = np.cumsum([0] + list(model.config.depths))
  for key, value in state.items():
    match = _LEVEL_BLOCK.match(key)
    if not match:
      continue
    level, index, rest = int(match[1]), int(match[2]), match[3]
    handled.add(key)
    if not 1 <= level <= len(model.config.depths):
      problems.append(f"unexpected key {key}")
      continue
    if not starts[level - 1] <= index < starts[level]:
      problems.append(f"{key}: block {index} is not in level {level} (blocks "
                      f"{starts[level - 1]}..{starts[level] - 1})")
      continue
    twin = f"blocks.{index}.{rest}"
    if twin in state and not np.array_equal(state[twin], value):
      problems.append(f"{key} differs from {twin} (they are the same tensor in the authors' "
                      f"model)")
  if model.pos_embed is None:
    handled |= {key for key in _FIXED_KEYS if key in state}
    if "pos_embed" in state:
      _check_sincos_table(model, np.asarray(state["pos_embed"]), problems)
  elif "pe_token" in state:
    problems.append("pe_token (the fixed sin-cos model's class-token embedding) in a state "
                    "dict for a model with position_embedding='learned'; a MoCo checkpoint "
                    "needs position_embedding='sincos'")
    handled.add("pe_token")
  return handled


def _check_sincos_table(model: cast_model.CAST, table: np.ndarray, problems: list[str]) -> None:
  cells = table.shape[1] if table.ndim == 3 else 0
  side = int(round(cells ** 0.5))
  learned_side = int(round(max(cells - 1, 0) ** 0.5))
  hint = ("; a learned table (DeiT checkpoint: 1 + G*G rows) needs "
          "CASTConfig(position_embedding='learned', position_grid=G)")
  if table.ndim != 3 or table.shape[0] != 1 or table.shape[2] != model.config.dim:
    problems.append(f"pos_embed has shape {table.shape}, expected (1, G*G, "
                    f"{model.config.dim}) for the fixed sin-cos embedding")
  elif side * side == cells:
    ours = np.asarray(cast_model.sincos_position_embedding(side, side, model.config.dim))
    if not np.allclose(ours.reshape(1, cells, -1), table, atol=1e-5):
      problems.append("pos_embed differs from the fixed 2-D sin-cos embedding this model "
                      "uses" + hint)
  elif learned_side * learned_side + 1 == cells:
    problems.append(f"pos_embed has shape {table.shape}, a class row plus a "
                    f"{learned_side}x{learned_side} grid, but the model uses the fixed "
                    f"sin-cos embedding" + hint)


def _shape_hint(key: str, shape) -> str:
  if key != "pos_embed" or len(shape) != 3:
    return ""
  side = int(round(max(shape[1] - 1, 0) ** 0.5))
  if side * side + 1 != shape[1]:
    return " (1 + G*G rows: the class row and a G x G grid)"
  return f" (a {side}x{side} grid: set CASTConfig.position_grid={side})"


def load_cast_state_dict(model: cast_model.CAST, state: Mapping[str, np.ndarray], *,
                         source: str = "state dict") -> None:
  """Copies an (unprefixed) CAST state dict into `model`.

  Raises ValueError naming `source` and every missing, unexpected or mis-shaped key, and
  leaves the model unchanged, when the state dict does not match the model.
  """
  targets = cast_targets(model)
  problems: list[str] = []
  handled = _check_fixed_and_duplicates(model, state, problems)
  present = {key for key in state if not key.endswith(_IGNORED_SUFFIXES)} - handled
  if model.head is None:
    present = {key for key in present if not key.startswith("head.")}
  missing, unexpected = set(targets) - present, present - set(targets)
  if missing:
    problems.append(f"missing keys: {_listed(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_listed(unexpected)}")
  for key in sorted(present & set(targets)):
    expected = targets[key][2]
    if tuple(state[key].shape) != expected:
      problems.append(f"shape mismatch for {key}: file has {tuple(state[key].shape)}, the "
                      f"model expects {expected}" + _shape_hint(key, state[key].shape))
  if problems:
    raise ValueError(f"{source}: not a CAST state dict for this model (dim "
                     f"{model.config.dim}, depths {model.config.depths}); " + "; ".join(problems))
  for key, (variable, transform, _) in targets.items():
    value = transform(np.asarray(state[key], dtype=np.float32))
    variable.set_value(jnp.asarray(value, dtype=variable.dtype))


def load_cast_checkpoint(model: cast_model.CAST, path: str | os.PathLike, *,
                         encoder: str = "base", trust_pickle: bool = False) -> None:
  """Loads the `encoder` ('base', 'momentum' or 'deit') of a checkpoint file into `model`.

  For a bare state dict without the MoCo prefixes use encoder='deit'.
  """
  state = encoder_state(read_checkpoint(path, trust_pickle=trust_pickle), encoder, str(path))
  load_cast_state_dict(model, state, source=str(path))


def _set_rng_state(model: cast_model.CAST, seed: int) -> None:
  """Concrete dropout / drop-path RNG streams for an abstractly built model."""
  rng_state = nnx.state(model, nnx.RngState)
  base = jax.random.key(seed)
  flat = []
  for index, (path, variable) in enumerate(nnx.to_flat_state(rng_state)):
    if isinstance(variable, nnx.RngKey):
      value = jax.random.fold_in(base, index)
    else:
      value = jnp.zeros(variable.shape, variable.dtype)
    flat.append((path, variable.replace(value)))
  nnx.update(model, nnx.from_flat_state(flat))


def cast_from_state_dict(config: cast_model.CASTConfig, state: Mapping[str, np.ndarray], *,
                         num_classes: int | None = None, drop_path_rate: float = 0.0,
                         seed: int = 0, source: str = "state dict") -> cast_model.CAST:
  """A CAST holding an (unprefixed) state dict, built without a random initialisation.

  The model is built abstractly (`nnx.eval_shape`), every parameter and BatchNorm
  statistic is set from `state`, and the dropout streams are seeded from `seed`. This
  skips compiling an initialiser per parameter shape (tens of CPU seconds).
  """
  model = nnx.eval_shape(lambda: cast_model.CAST(
      config, num_classes=num_classes, drop_path_rate=drop_path_rate, rngs=nnx.Rngs(seed)))
  load_cast_state_dict(model, state, source=source)
  _set_rng_state(model, seed)
  leftovers = [path for path, value in nnx.to_flat_state(nnx.state(model))
               if isinstance(value[...], jax.ShapeDtypeStruct)]
  if leftovers:
    raise AssertionError(f"cast_from_state_dict: state left unset: {leftovers[:5]}")
  return model


def cast_from_checkpoint(config: cast_model.CASTConfig, path: str | os.PathLike, *,
                         encoder: str = "base", num_classes: int | None = None,
                         trust_pickle: bool = False, **options) -> cast_model.CAST:
  """`cast_from_state_dict` of one encoder of a checkpoint file (see load_cast_checkpoint)."""
  state = encoder_state(read_checkpoint(path, trust_pickle=trust_pickle), encoder, str(path))
  return cast_from_state_dict(config, state, num_classes=num_classes, source=str(path),
                              **options)
