"""Optimizers: base rule, schedules, parameter groups, freezing, accumulation.

Everything is an optax transformation built from `config.optim`:

- `name`: the update rule, one of `OPTIMIZERS` (sgd, momentum, adam, adamw).
- `learning_rate` and `schedule`, one of `SCHEDULES` (constant, warmup_cosine,
  step_decay); step decay multiplies by `decay_factor` at the given
  `decay_fractions` of training (HSG: 0.1 at 32%, 56% and 75%).
- `groups`: parameter groups selected by a regular expression over the
  parameter path (e.g. `head/.*`), each with learning-rate multipliers. A
  multiplier may differ per training phase (`phase_boundaries` in steps), which
  expresses "encoder frozen for 30 epochs, then everything at 1e-5".
  Parameters matching no group use `default_lr_mults`.
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


SCHEDULES = {"constant": _constant, "warmup_cosine": _warmup_cosine, "step_decay": _step_decay}


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


FROZEN = "frozen"
DEFAULT = "default"


def _groups(c: ml_collections.ConfigDict) -> list[ParamGroup]:
  groups = []
  for i, g in enumerate(c.get("groups", ())):
    mults = g.lr_mults if isinstance(g.lr_mults, (tuple, list)) else (g.lr_mults,)
    groups.append(ParamGroup(g.get("name", f"group{i}"), g.pattern, tuple(float(m) for m in mults)))
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


def param_labels(params: Any, c: ml_collections.ConfigDict) -> Any:
  """A pytree of group names: 'frozen', the first matching group, or 'default'."""
  frozen = [re.compile(p) for p in c.get("frozen", ())]
  groups = [(g.name, re.compile(g.pattern)) for g in _groups(c)]

  def label(path, _):
    name = parameter_name(path)
    if any(p.fullmatch(name) for p in frozen):
      return FROZEN
    return next(g for g, p in groups if p.fullmatch(name))

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


def make_optimizer(c: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation described in the module docstring."""
  direction = lookup(OPTIMIZERS, c.name, "optimizer (config.optim.name)")
  base_schedule = lookup(SCHEDULES, c.get("schedule", "constant"), "schedule (config.optim.schedule)")(
      c, total_steps)
  boundaries = tuple(int(b) for b in c.get("phase_boundaries", ()))

  def group_tx(group: ParamGroup) -> optax.GradientTransformation:
    mult = _phase_multiplier(group.lr_mults, boundaries)
    return optax.chain(direction(c), optax.scale_by_schedule(lambda s: -base_schedule(s) * mult(s)))

  transforms = {g.name: group_tx(g) for g in _groups(c)}
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
