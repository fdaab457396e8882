"""Mixup, CutMix and label smoothing on a batch, as pure jit-able JAX functions.

DeiT's recipe (Touvron et al., ICML 2021), which CAST's supervised training uses (Ke, Mo,
Yu, ICLR 2024, appendix E.4 Table 12: label smoothing 0.1, mixup 0.8, cutmix 1.0), mixes
each batch with its own reverse (timm's `Mixup`, mode "batch", read for the details):

  with probability `mix_prob`:
    CutMix with probability `switch_prob`, else Mixup
    lam ~ Beta(alpha, alpha)       alpha = cutmix_alpha or mixup_alpha
    Mixup:  x_i <- lam x_i + (1 - lam) x_{B-1-i}
    CutMix: a box of height floor(H sqrt(1 - lam)) and width floor(W sqrt(1 - lam)),
            centred at a uniform pixel (cy, cx) and clipped to the image, is pasted from
            x_{B-1-i}; lam <- 1 - box area / (H W)   (the area actually pasted)
  otherwise lam = 1 (no mixing)
  targets: y_i = lam s(e_{c_i}) + (1 - lam) s(e_{c_{B-1-i}})
           s(e_c) = (1 - eps) e_c + eps / K    (label smoothing, `smooth_one_hot`)

One lam and one box per batch, drawn from a JAX key (`beta_samples`): under `jax.jit` the shapes are
fixed and no value goes back to the host. With lam = 1 the images and targets are the
unmixed ones exactly.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MixOptions:
  """timm's Mixup arguments as DeiT sets them (the defaults)."""
  mixup_alpha: float = 0.8
  cutmix_alpha: float = 1.0
  mix_prob: float = 1.0
  switch_prob: float = 0.5
  smoothing: float = 0.1

  def __post_init__(self):
    if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
      raise ValueError(f"MixOptions: mixup_alpha={self.mixup_alpha} and cutmix_alpha="
                       f"{self.cutmix_alpha} must be >= 0 (0 disables)")
    for name in ("mix_prob", "switch_prob", "smoothing"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"MixOptions: {name}={getattr(self, name)} must be in [0, 1]")


_GAMMA_PROPOSALS = 16  # P(all rejected) < 0.05 ** 16 for Marsaglia-Tsang at alpha >= 1


def gamma_from_noise(alpha: float, normals: jax.Array, uniforms: jax.Array,
                     boost: jax.Array) -> jax.Array:
  """A Gamma(alpha, 1) draw (alpha > 0) from given noise, without a while loop.

  Marsaglia and Tsang (2000) at alpha + 1 (acceptance > 95%) on the proposals `normals`
  (P,) N(0, 1) with acceptance uniforms `uniforms` (P,) in (0, 1); the first accepted
  proposal is kept, then boosted: Gamma(alpha) = Gamma(alpha + 1) boost^(1 / alpha),
  `boost` U(0, 1). (`jax.random.beta` / `gamma` compile a rejection loop whose compile
  time, tens of seconds on a loaded CPU, would dominate a small train step.)
  """
  d = alpha + 1.0 - 1.0 / 3.0
  c = 1.0 / jnp.sqrt(9.0 * d)
  v = (1.0 + c * normals) ** 3
  safe_v = jnp.where(v > 0, v, 1.0)
  accept = (v > 0) & (jnp.log(uniforms) < 0.5 * normals ** 2 + d - d * safe_v
                      + d * jnp.log(safe_v))
  return (d * safe_v[jnp.argmax(accept)] * boost ** (1.0 / alpha)).astype(jnp.float32)


def beta_samples(key: jax.Array, alphas: tuple[tuple[float, float], ...]) -> jax.Array:
  """One Beta(a, b) draw X / (X + Y) (X ~ Gamma(a), Y ~ Gamma(b)) per (a, b) of `alphas`,
  float32 (len(alphas),), from two random calls."""
  key_normal, key_uniform = jax.random.split(key)
  n = 2 * len(alphas)
  normals = jax.random.normal(key_normal, (n, _GAMMA_PROPOSALS))
  uniforms = jax.random.uniform(key_uniform, (n, _GAMMA_PROPOSALS + 1), minval=1e-12)
  draws = [gamma_from_noise(alpha, normals[i], uniforms[i, 1:], uniforms[i, 0])
           for i, alpha in enumerate(a for pair in alphas for a in pair)]
  return jnp.stack([draws[2 * i] / jnp.maximum(draws[2 * i] + draws[2 * i + 1], 1e-30)
                    for i in range(len(alphas))])


def smooth_one_hot(labels: jax.Array, num_classes: int, *, smoothing: float = 0.0) -> jax.Array:
  """(B,) int -> (B, K) float32: 1 - eps + eps / K on the label, eps / K elsewhere."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) * (1.0 - smoothing) + off


def mix_targets(labels: jax.Array, num_classes: int, lam: jax.Array, *,
                smoothing: float = 0.0) -> jax.Array:
  """lam s(e_{c_i}) + (1 - lam) s(e_{c_{B-1-i}}) (module docstring)."""
  y = smooth_one_hot(labels, num_classes, smoothing=smoothing)
  return lam * y + (1.0 - lam) * y[::-1]


def cutmix_box(height: int, width: int, lam: jax.Array, cy: jax.Array, cx: jax.Array
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """(top, bottom, left, right) int32 of timm's `rand_bbox` centred at pixel (cy, cx):
  half-open rows [top, bottom) and columns [left, right)."""
  ratio = jnp.sqrt(1.0 - lam)
  cut_h = jnp.floor(height * ratio).astype(jnp.int32)
  cut_w = jnp.floor(width * ratio).astype(jnp.int32)
  top, bottom = jnp.clip(cy - cut_h // 2, 0, height), jnp.clip(cy + cut_h // 2, 0, height)
  left, right = jnp.clip(cx - cut_w // 2, 0, width), jnp.clip(cx + cut_w // 2, 0, width)
  return top, bottom, left, right


def box_mask(height: int, width: int, box) -> jax.Array:
  """(H, W) bool, True inside the half-open box (top, bottom, left, right)."""
  top, bottom, left, right = box
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


def mixup(images: jax.Array, lam: jax.Array) -> jax.Array:
  """lam x_i + (1 - lam) x_{B-1-i} for (B, ...) images."""
  return lam * images + (1.0 - lam) * images[::-1]


def cutmix(images: jax.Array, box) -> tuple[jax.Array, jax.Array]:
  """(B, H, W, C) images with the box pasted from the reversed batch, and the area-corrected
  lam = 1 - box area / (H W)."""
  height, width = images.shape[1:3]
  inside = box_mask(height, width, box)
  top, bottom, left, right = box
  lam = 1.0 - ((bottom - top) * (right - left)).astype(jnp.float32) / (height * width)
  return jnp.where(inside[None, :, :, None], images[::-1], images), lam


def mix_batch(key: jax.Array, images: jax.Array, labels: jax.Array, *, num_classes: int,
              options: MixOptions = MixOptions()) -> tuple[jax.Array, jax.Array, jax.Array]:
  """DeiT's batch mixing (module docstring).

  Args:
    key: PRNG key of this step's mixing.
    images: (B, H, W, C) float.
    labels: (B,) int class indices.
    num_classes: K.
    options: alphas, probabilities and label smoothing.

  Returns:
    mixed images (B, H, W, C), soft targets (B, K) float32 (rows sum to 1), and the
    scalar lam used (1 when the batch was left unmixed).
  """
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise ValueError(f"mix_batch: images must be (B, H, W, C) and labels (B,); got "
                     f"{images.shape} and {labels.shape}")
  o = options
  if o.mixup_alpha == 0 and o.cutmix_alpha == 0:
    ones = jnp.ones((), jnp.float32)
    return images, mix_targets(labels, num_classes, ones, smoothing=o.smoothing), ones
  key_lam, key_draws = jax.random.split(key)
  # One uniform draw for the discrete choices: mix?, cutmix?, the box centre (row, col).
  u = jax.random.uniform(key_draws, (4,))
  do_mix = u[0] < o.mix_prob
  if o.mixup_alpha > 0 and o.cutmix_alpha > 0:
    use_cutmix = u[1] < o.switch_prob
  else:
    use_cutmix = jnp.asarray(o.cutmix_alpha > 0)
  # Beta(a, a) needs a > 0: a disabled (0) alpha draws from Beta(1, 1), never used.
  mix_alpha = o.mixup_alpha if o.mixup_alpha > 0 else 1.0
  cut_alpha = o.cutmix_alpha if o.cutmix_alpha > 0 else 1.0
  lam_mixup, lam_cut_draw = beta_samples(key_lam, ((mix_alpha, mix_alpha),
                                                    (cut_alpha, cut_alpha)))
  height, width = images.shape[1:3]
  cy = jnp.minimum(jnp.floor(u[2] * height), height - 1).astype(jnp.int32)
  cx = jnp.minimum(jnp.floor(u[3] * width), width - 1).astype(jnp.int32)
  cut_images, lam_cut = cutmix(images, cutmix_box(height, width, lam_cut_draw, cy, cx))
  lam = jnp.where(use_cutmix, lam_cut, lam_mixup)
  lam = jnp.where(do_mix, lam, 1.0).astype(jnp.float32)
  mixed = jnp.where(use_cutmix, cut_images, mixup(images, lam))
  mixed = jnp.where(do_mix, mixed, images)
  return mixed, mix_targets(labels, num_classes, lam, smoothing=o.smoothing), lam
