"""Optimizers: update rules, schedules, parameter groups, freezing, accumulation.

Everything is an optax transformation built from `config.optim`:

- `name`: the update rule. One of jhseg's `OPTIMIZERS` (sgd, momentum, adam,
  adamw: torch-like rules configured by the fields `momentum`, `nesterov`, `b1`,
  `b2`, `eps`, `weight_decay`), or any optax optimiser of `OPTAX_OPTIMIZERS`
  (e.g. lion, lamb, lars, adafactor, rmsprop, adabelief), built as
  `optax.<name>(learning_rate=<schedule>, **optim.kwargs)`.
- `learning_rate` and `schedule`, one of `SCHEDULES` (constant, warmup_cosine,
  step_decay, poly); step decay multiplies by `decay_factor` at the given
  `decay_fractions` of training (HSG: 0.1 at 32%, 56% and 75%).
- `groups`: parameter groups selected by a regular expression over the
  parameter path (e.g. `head/.*`), each with learning-rate multipliers. A
  multiplier may differ per training phase (`phase_boundaries` in steps), which
  expresses "encoder frozen for 30 epochs, then everything at 1e-5".
  Parameters matching no group use `default_lr_mults`. A group may also have
  its own update rule: `optim` = a mapping of optimizer fields (name,
  learning_rate, schedule, weight_decay, kwargs, ...) that replace the global
  ones for that group (e.g. AdamW for a ViT, SGD for a linear probe).
- `layer_decay`: layer-wise learning-rate decay (BEiT / MAE fine-tuning):
  {rate, num_layers, layer_pattern, embedding_pattern}; a parameter whose name
  matches `layer_pattern` (a regular expression whose first group is the block
  index i, e.g. `encoder/blocks/(\\d+)/.*`) is in layer i + 1, one matching
  `embedding_pattern` in layer 0, any other in layer num_layers + 1; its learning
  rate is multiplied by rate ** (num_layers + 1 - layer), on top of its group's.
- `frozen`: regular expressions of parameters that never change; they carry no
  optimizer state at all.
- `grad_accum_steps`: gradient accumulation (optax.MultiSteps).
- The update is finally scaled by `lr_scale`, an extra argument the engine
  passes each step; reduce-on-plateau (`PlateauController`) sets it on the host.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax


def _sgd(c):
  return optax.identity()


def _decay_weight_matrices(params):
  """Weight decay on kernels only: biases and normalisation scales (ndim <= 1) are exempt."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _momentum(c):
  """SGD with momentum; weight decay added to the gradient first, as torch.optim.SGD."""
  momentum = optax.trace(decay=c.get("momentum", 0.9), nesterov=c.get("nesterov", False))
  if not c.get("weight_decay"):
    return momentum
  return optax.chain(optax.add_decayed_weights(c.weight_decay, mask=_decay_weight_matrices),
                     momentum)


def _adam(c):
  return optax.scale_by_adam(b1=c.get("b1", 0.9), b2=c.get("b2", 0.999), eps=c.get("eps", 1e-8))


def _adamw(c):
  return optax.chain(_adam(c), optax.add_decayed_weights(c.get("weight_decay", 1e-4)))


# The direction of the update; the learning rate is applied per group after it.
OPTIMIZERS: dict[str, Callable[[ml_collections.ConfigDict], optax.GradientTransformation]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "adam": _adam,
    "adamw": _adamw,
}
# optax's optimisers (`optax.<name>(learning_rate, **kwargs)`), for names not above.
OPTAX_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    name: getattr(optax, name) for name in (
        "adabelief", "adadelta", "adafactor", "adagrad", "adamax", "adamaxw", "adan",
        "amsgrad", "fromage", "lamb", "lars", "lion", "nadam", "nadamw", "noisy_sgd",
        "novograd", "optimistic_gradient_descent", "radam", "rmsprop", "rprop", "sm3",
        "yogi") if hasattr(optax, name)}
# Optimizer fields a group's `optim` may replace.
GROUP_OPTIM_FIELDS = ("name", "learning_rate", "schedule", "warmup_steps", "end_learning_rate",
                      "decay_fractions", "decay_factor", "momentum", "nesterov", "b1", "b2",
                      "eps", "weight_decay", "kwargs")


def _constant(c, total_steps):
  return optax.constant_schedule(c.learning_rate)


def _warmup_cosine(c, total_steps):
  warmup = int(c.get("warmup_steps", 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=c.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=c.get("end_learning_rate", 0.0))


def _step_decay(c, total_steps):
  """Constant, times `decay_factor` at each of `decay_fractions`; optional linear warm-up."""
  fractions = c.get("decay_fractions", (0.32, 0.56, 0.75))
  factor = c.get("decay_factor", 0.1)
  decay = optax.piecewise_constant_schedule(
      c.learning_rate, {int(f * total_steps): factor for f in fractions})
  warmup = int(c.get("warmup_steps", 0))
  if not warmup:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, c.learning_rate, warmup), lambda s: decay(s + warmup)],
      [warmup])


def _poly(c, total_steps):
  """DeepLab's "poly": lr * (1 - step / total_steps) ** 0.9, down to `end_learning_rate`."""
  return optax.polynomial_schedule(c.learning_rate, c.get("end_learning_rate", 0.0), power=0.9,
                                   transition_steps=max(total_steps, 1))


SCHEDULES = {"constant": _constant, "warmup_cosine": _warmup_cosine, "step_decay": _step_decay,
             "poly": _poly}


def lookup(table: dict[str, Any], name: str, what: str) -> Any:
  """`table[name]`, or a ValueError that lists the valid names."""
  if name not in table:
    raise ValueError(f"unknown {what} {name!r}; valid names: {sorted(table)}")
  return table[name]


def parameter_name(path: Sequence[Any]) -> str:
  """'encoder/layer1/0/conv1/kernel' from a pytree key path."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
  name: str
  pattern: str
  lr_mults: tuple[float, ...]
  optim: Any = None  # the group's own optimizer fields (GROUP_OPTIM_FIELDS), or None


FROZEN = "frozen"
DEFAULT = "default"


def _groups(c: ml_collections.ConfigDict) -> list[ParamGroup]:
  groups = []
  for i, g in enumerate(c.get("groups", ())):
    mults = g.lr_mults if isinstance(g.lr_mults, (tuple, list)) else (g.lr_mults,)
    mults = tuple(float(m) for m in mults)
    own = g.get("optim")
    name = g.get("name", f"group{i}")
    if own is not None:
      unknown = sorted(set(own.keys()) - set(GROUP_OPTIM_FIELDS))
      if unknown:
        raise ValueError(f"optim.groups[{name}].optim: unknown field(s) {unknown}; valid "
                         f"fields: {sorted(GROUP_OPTIM_FIELDS)}")
    groups.append(ParamGroup(name, g.pattern, mults, own))
  default = c.get("default_lr_mults", (1.0,))
  default = default if isinstance(default, (tuple, list)) else (default,)
  groups.append(ParamGroup(DEFAULT, ".*", tuple(float(m) for m in default)))
  n_phases = len(c.get("phase_boundaries", ())) + 1
  for g in groups:
    if len(g.lr_mults) not in (1, n_phases):
      raise ValueError(
          f"optim.groups[{g.name}].lr_mults has {len(g.lr_mults)} values; expected 1 or one per "
          f"phase ({n_phases}, from optim.phase_boundaries)")
  return groups


@dataclasses.dataclass(frozen=True)
class LayerDecay:
  """Layer-wise learning-rate decay (module docstring)."""
  rate: float
  num_layers: int
  layer_pattern: str
  embedding_pattern: str = "(?!)"  # matches nothing

  @classmethod
  def from_config(cls, c: ml_collections.ConfigDict) -> "LayerDecay | None":
    spec = c.get("layer_decay")
    if not spec:
      return None
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec.keys()) - fields)
    missing = sorted({"rate", "num_layers", "layer_pattern"} - set(spec.keys()))
    if unknown or missing:
      raise ValueError(f"optim.layer_decay: unknown {unknown} / missing {missing} fields; "
                       f"valid fields: {sorted(fields)}")
    return cls(**dict(spec))

  def layer(self, name: str) -> int:
    block = re.fullmatch(self.layer_pattern, name)
    if block:
      index = int(block.group(1))
      if not 0 <= index < self.num_layers:
        raise ValueError(f"optim.layer_decay: parameter {name} is in block {index}, outside "
                         f"num_layers={self.num_layers}")
      return index + 1
    if re.fullmatch(self.embedding_pattern, name):
      return 0
    return self.num_layers + 1

  def multiplier(self, layer: int) -> float:
    return float(self.rate) ** (self.num_layers + 1 - layer)


def _label(group: str, layer: int | None) -> str:
  return group if layer is None else f"{group}@layer{layer}"


def param_labels(params: Any, c: ml_collections.ConfigDict) -> Any:
  """A pytree of group names: 'frozen', the first matching group, or 'default'
  (with `layer_decay`, followed by '@layer<k>')."""
  frozen = [re.compile(p) for p in c.get("frozen", ())]
  groups = [(g.name, re.compile(g.pattern)) for g in _groups(c)]
  decay = LayerDecay.from_config(c)

  def label(path, _):
    name = parameter_name(path)
    if any(p.fullmatch(name) for p in frozen):
      return FROZEN
    group = next(g for g, p in groups if p.fullmatch(name))
    return _label(group, decay.layer(name) if decay else None)

  return jax.tree_util.tree_map_with_path(label, params)


def _phase_multiplier(mults: tuple[float, ...], boundaries: Sequence[int]) -> Callable:
  if len(mults) == 1:
    return lambda step: mults[0]
  values = jnp.asarray(mults, jnp.float32)
  bounds = jnp.asarray(boundaries, jnp.int32)
  return lambda step: values[jnp.sum(step >= bounds)]


def scale_by_lr_scale() -> optax.GradientTransformationExtraArgs:
  """Multiplies updates by the `lr_scale` extra argument (1 when absent)."""

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, lr_scale=None, **extra):
    del params, extra
    if lr_scale is None:
      return updates, state
    return jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _update_rule(c: ml_collections.ConfigDict, schedule: Callable,
                 where: str) -> optax.GradientTransformation:
  """The rule `c.name` (jhseg's or optax's) stepping by the learning rate `schedule`."""
  if c.name in OPTIMIZERS:
    if c.get("kwargs"):
      raise ValueError(f"{where}.kwargs: only optax optimisers take kwargs; jhseg's "
                       f"{c.name!r} reads the fields momentum, nesterov, b1, b2, eps, "
                       f"weight_decay")
    return optax.chain(OPTIMIZERS[c.name](c), optax.scale_by_schedule(lambda s: -schedule(s)))
  if c.name not in OPTAX_OPTIMIZERS:
    raise ValueError(f"unknown optimizer ({where}.name) {c.name!r}; valid names: jhseg's "
                     f"{sorted(OPTIMIZERS)} or optax's {sorted(OPTAX_OPTIMIZERS)}")
  try:
    return OPTAX_OPTIMIZERS[c.name](learning_rate=schedule, **dict(c.get("kwargs") or {}))
  except TypeError as err:
    raise ValueError(f"{where}: optax.{c.name} rejects {where}.kwargs="
                     f"{dict(c.get('kwargs') or {})}: {err}") from err


def _group_config(c: ml_collections.ConfigDict, group: ParamGroup) -> ml_collections.ConfigDict:
  if group.optim is None:
    return c
  merged = ml_collections.ConfigDict(c.to_dict())
  for key, value in group.optim.items():
    merged[key] = value
  return merged


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation described in the module docstring."""
  boundaries = tuple(int(b) for b in c.get("phase_boundaries", ()))
  decay = LayerDecay.from_config(c)
  layers = [None] if decay is None else list(range(decay.num_layers + 2))

  def group_tx(group: ParamGroup, layer: int | None) -> optax.GradientTransformation:
    gc = _group_config(c, group)
    where = "config.optim" if group.optim is None else f"config.optim.groups[{group.name}].optim"
    base_schedule = lookup(SCHEDULES, gc.get("schedule", "constant"),
                           f"schedule ({where}.schedule)")(gc, total_steps)
    mult = _phase_multiplier(group.lr_mults, boundaries)
    layer_mult = 1.0 if layer is None else decay.multiplier(layer)
    if layer_mult == 1.0:
      schedule = lambda s: base_schedule(s) * mult(s)
    else:
      schedule = lambda s: base_schedule(s) * mult(s) * layer_mult
    return _update_rule(gc, schedule, where)

  transforms = {_label(g.name, layer): group_tx(g, layer) for g in _groups(c) for layer in layers}
  transforms[FROZEN] = optax.set_to_zero()
  parts = []
  if c.get("grad_clip_norm"):
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  parts += [optax.multi_transform(transforms, lambda p: param_labels(p, c)), scale_by_lr_scale()]
  tx = optax.chain(*parts)
  accum = int(c.get("grad_accum_steps", 1))
  if accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=accum)
  return tx


@dataclasses.dataclass
class PlateauController:
  """Reduce-on-plateau on a monitored evaluation metric, kept on the host.

  After `patience` evaluations without an improvement larger than
  `threshold` (relative), the learning-rate scale is multiplied by `factor`
  (the ultrametric paper divides by 3 after 5 epochs). Its state is part of
  every checkpoint so resumed runs continue the same schedule.
  """
  factor: float = 1.0 / 3.0
  patience: int = 5
  mode: str = "min"
  threshold: float = 1e-4
  min_scale: float = 0.0
  scale: float = 1.0
  best: float | None = None
  num_bad: int = 0

  def update(self, value: float) -> float:
    margin = 0.0 if self.best is None else self.threshold * abs(self.best)
    improved = self.best is None or (
        value < self.best - margin if self.mode == "min" else value > self.best + margin)
    if improved:
      self.best, self.num_bad = float(value), 0
    else:
      self.num_bad += 1
      if self.num_bad >= self.patience:
        self.scale = max(self.scale * self.factor, self.min_scale)
        self.num_bad = 0
    return self.scale

  def state_dict(self) -> dict[str, Any]:
    return {"scale": self.scale, "best": self.best, "num_bad": self.num_bad}

  def load_state_dict(self, state: dict[str, Any]) -> None:
    self.scale, self.best, self.num_bad = state["scale"], state["best"], state["num_bad"]
