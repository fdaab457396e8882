r"""HiPoSeg losses (Lim, Kim, Kim, Cho, "Hierarchical Prototype Learning for Semantic
Segmentation"), as pure functions, with the prototype memory and the phased schedule.

Notation (section 3): z~ unit pixel embeddings (eq. 3, `jhseg.models.hiposeg_head`), Y^L
fine (low-level) and Y^H coarse (high-level) classes, pi: Y^L -> Y^H the label tree
(`jhseg.label_tree.LabelTree.fine_to_level(1)`), h^i / l^j high / low prototypes,
delta(a, b) = ||a - b||_2 and s(a, b) = -delta(a, b)^2 (section 3.2).

* `batch_prototypes`, `class_sums`, `prototypes_from_sums`   mu and p of eqs. (5)-(6)
* `init_memory`, `update_memory`  memories M^H, M^L (eq. 4) and the momentum update (15)
* `feature_prototype_loss`      L_fh (eq. 7) with high-level labels, L_fl (eq. 9) with
                                low-level ones
* `prototype_repulsion_loss`    L_hh (eq. 8) / L_ll (eq. 10)
* `alignment_in_loss`, `alignment_out_loss`, `alignment_loss`   eqs. (11), (12), (13)
* `loss_weights`, `phase_switch_steps`, `training_phase`          the phased schedule
* `sample_pixels`                                                 fixed-shape sampling
* `hiposeg_losses`              every term of one batch + the updated memories
* `total_loss`                  eq. (14)

All functions are jit-able with fixed shapes; classes are masked rather than dropped.

Decisions the paper leaves open (each a keyword option; defaults and reasons):
  * Prototypes in L_fh / L_fl (`feature_targets="memory"`): the memory entries after this
    batch's eq.-15 update, without gradient. The memory is what the paper maintains for
    the feature-prototype contrast ("entries stored in the memory", section 3.2); being
    a slow average it gives stable targets, and the gradient reaches the network
    through the features z~. Including this batch's update guarantees every class
    present in the batch has a prototype. ("batch": the batch prototypes, eq. 6.)
  * Prototypes in L_hh, L_ll, L_align (`prototype_targets="batch"`): for classes present
    in the batch, the batch prototypes of eq. 6 (differentiable: they are means of the
    current embeddings); for the others, the memory entries (constants). Memory entries
    carry no gradient, so terms computed on them alone would be constants that train
    nothing; the batch prototypes move the features of a whole class at once, which is
    what the repulsion / alignment terms are meant to do. ("memory" is the literal,
    gradient-free reading, kept for ablations.)
  * Pixels: embeddings live at stride 4 (the decoder resolution); labels are sampled
    there by nearest neighbour at pixel centres (`jhseg.segments.resize_labels_nearest`). Prototypes (eq. 5) average
    every valid stride-4 pixel of the batch. The contrastive terms L_fh / L_fl use
    `num_samples` pixels per image drawn without replacement, by default
    class-balanced (each class present in the image equally likely, as ContrastSeg's
    per-class anchor sampling), so small parts are not swamped by background; the
    means of eqs. 7 / 9 run over the sampled valid pixels.
  * tau = 0.2: for unit vectors s(a, b) = 2 a.b - 2, so s / 0.2 = a.b / 0.1 + const, i.e.
    the cosine temperature 0.1 of ContrastSeg / ProtoSeg.
  * kappa = 0.5: exp(s/kappa) = exp(-2 ||a-b||^2), the uniformity loss of Wang & Isola
    (ICML 2020) with its default t = 2.
  * alpha = beta = 1 (eq. 13 only asks for positive weights).
  * lambda_1 = 1 (cross-entropy) and lambda_2..6 = 0.1: ContrastSeg's weight of its
    auxiliary contrastive term; the cross-entropy keeps driving the classifier and the
    hierarchical terms shape the embedding (`LossWeights`).
  * d' = 256 and the feature stages: see `jhseg.models.hiposeg_head`.
  * Classes that have no prototype yet (never seen by the memory; absent from the batch
    with `*_targets="batch"`) are left out of the softmax denominators and of the pair
    sums; the normalisers of eqs. 8, 10, 11, 12 count the pairs / classes actually used.

Faithfulness (deliberate deviations):
  * First update of a memory entry: the entry is set to the batch prototype (eq. 15
    needs a previous value; Fig. 2 initialises the memories from the first features).
  * After eq. 15 the updated entries are re-normalised to unit length (`renormalize`):
    eq. 6 puts prototypes on the unit sphere and the margins sigma_1 = 0.25, sigma_2 = 1
    are distances between unit vectors; a convex combination would slowly shrink.
  * The memories are updated from the first step, also in the feature-only phase, so
    that they hold meaningful prototypes when the prototype losses switch on.
  * delta uses sqrt(max(d^2, 1e-12)): a part that is its object's only part (boat,
    background) has l^j = h^i and an exact sqrt would give NaN gradients there.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jhseg import segments

# Finite stand-in for -inf: masked logits keep finite values and zero gradients.
_NEG = -1e30
_DISTANCE_EPS = 1e-12

PAPER_MOMENTUM = 0.9          # m, eq. 15
PAPER_MARGIN_IN = 0.25        # sigma_1, eq. 11
PAPER_MARGIN_OUT = 1.0        # sigma_2, eq. 12
DEFAULT_TEMPERATURE = 0.2     # tau (module docstring)
DEFAULT_REPULSION_TEMPERATURE = 0.5  # kappa
# Fractions of the total iterations after which the high-level prototype losses, the
# low-level ones and the alignment switch on (section 3.2, "Training Schedule").
PAPER_PHASE_STARTS = (0.075, 0.225, 0.375)
FEATURE_TARGETS = ("memory", "batch")
PROTOTYPE_TARGETS = ("batch", "memory")


def _check_choice(name: str, value: str, valid: Sequence[str]) -> str:
  if value not in valid:
    raise ValueError(f"hiposeg: {name}={value!r} is not supported; valid values: "
                     f"{list(valid)}")
  return value


def _safe_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
  w = weights.astype(values.dtype)
  return jnp.sum(values * w) / jnp.maximum(jnp.sum(w), 1.0)


def _unit(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), _DISTANCE_EPS))


# -- geometry ------------------------------------------------------------------------

def squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """(N, d), (K, d) -> (N, K) matrix of ||a_n - b_k||^2 = -s(a_n, b_k), clamped >= 0."""
  sq = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
  return jnp.maximum(sq, 0.0)


def distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """delta(a_n, b_k) with a gradient that stays finite at coincident points."""
  return jnp.sqrt(jnp.maximum(squared_distances(a, b), _DISTANCE_EPS))


# -- prototypes and memory -----------------------------------------------------------

def class_sums(embeddings: jax.Array, labels: jax.Array, num_classes: int
               ) -> tuple[jax.Array, jax.Array]:
  r"""Numerator and denominator of eq. (5): \sum_n 1[y_n = c] z~_n and \sum_n 1[y_n = c].

  Sums add over batches, so the prototypes of several micro-batches (gradient
  accumulation) are `prototypes_from_sums` of their summed sums and counts.

  Args:
    embeddings: (N, d) unit pixel embeddings z~ (any leading pixel layout, flattened).
    labels: (N,) int class of each pixel; values outside [0, num_classes) (the ignore
      label) do not count.
    num_classes: K.

  Returns:
    (sums (K, d), counts (K,) float), differentiable w.r.t. `embeddings`.
  """
  labels = labels.reshape(-1)
  embeddings = embeddings.reshape(labels.shape[0], -1)
  valid = (labels >= 0) & (labels < num_classes)
  segment = jnp.where(valid, labels, num_classes)
  sums = jax.ops.segment_sum(embeddings, segment, num_segments=num_classes + 1)[:-1]
  counts = jax.ops.segment_sum(valid.astype(embeddings.dtype), segment,
                               num_segments=num_classes + 1)[:-1]
  return sums, counts


def prototypes_from_sums(sums: jax.Array, counts: jax.Array, *,
                         epsilon: float = 1e-6) -> jax.Array:
  """Eqs. (5)-(6) from `class_sums`: mu^c = sums^c / (counts^c + eps), p^c = mu^c / ||mu^c||
  (zero rows for absent classes)."""
  return _unit(sums / (counts[:, None] + epsilon))


def batch_prototypes(embeddings: jax.Array, labels: jax.Array, num_classes: int, *,
                     epsilon: float = 1e-6) -> tuple[jax.Array, jax.Array]:
  r"""Class prototypes of a batch, eqs. (5)-(6).

    mu^c = \sum_n 1[y_n = c] z~_n / (\sum_n 1[y_n = c] + epsilon),   p^c = mu^c / ||mu^c||

  Args:
    embeddings: (N, d) unit pixel embeddings z~ (any leading pixel layout, flattened).
    labels: (N,) int class of each pixel; values outside [0, num_classes) (the ignore
      label) do not count.
    num_classes: K.
    epsilon: the epsilon of eq. 5.

  Returns:
    (prototypes (K, d) unit vectors -- zero rows for absent classes --, counts (K,)).
    Differentiable w.r.t. `embeddings`.
  """
  sums, counts = class_sums(embeddings, labels, num_classes)
  return prototypes_from_sums(sums, counts, epsilon=epsilon), counts


class PrototypeMemory(NamedTuple):
  """One prototype memory (M^H or M^L of eq. 4): (K, d) entries and which are set."""
  prototypes: jax.Array
  seen: jax.Array  # (K,) bool: the entry has received at least one batch prototype


class HierarchicalMemory(NamedTuple):
  """M^H (indexed by high-level class) and M^L (indexed by low-level class), eq. 4.

  M^L is stored flat over Y^L; the tree's parent table gives the arrangement
  [l_j^i]_{i, j in Y^L(i)} of eq. 4.
  """
  high: PrototypeMemory
  low: PrototypeMemory


def init_memory(num_classes: int, dim: int) -> PrototypeMemory:
  """An empty memory: zero entries, none seen."""
  return PrototypeMemory(jnp.zeros((num_classes, dim), jnp.float32),
                         jnp.zeros((num_classes,), bool))


def init_hierarchical_memory(num_high: int, num_low: int, dim: int) -> HierarchicalMemory:
  return HierarchicalMemory(init_memory(num_high, dim), init_memory(num_low, dim))


def update_memory(memory: PrototypeMemory, prototypes: jax.Array, counts: jax.Array, *,
                  momentum: float = PAPER_MOMENTUM, renormalize: bool = True
                  ) -> PrototypeMemory:
  r"""Momentum update of the entries of the classes present in the batch, eq. (15).

    entry^c <- m entry^c + (1 - m) p^c     (classes with counts > 0 seen before)
    entry^c <- p^c                         (first time class c is seen)

  then (with `renormalize`) re-normalised to unit length. Absent classes keep their
  entry. No gradient flows through the result (the memory is state, not a parameter).
  """
  if not 0.0 <= momentum < 1.0:
    raise ValueError(f"update_memory: momentum={momentum} should lie in [0, 1) (m of "
                     "eq. 15; the paper uses 0.9)")
  prototypes = jax.lax.stop_gradient(prototypes)
  present = counts > 0
  old = memory.prototypes
  mixed = momentum * old + (1.0 - momentum) * prototypes
  new = jnp.where(memory.seen[:, None], mixed, prototypes)
  if renormalize:
    new = _unit(new)
  entries = jnp.where(present[:, None], new, old)
  return PrototypeMemory(jax.lax.stop_gradient(entries), memory.seen | present)


# -- losses --------------------------------------------------------------------------

def feature_prototype_loss(embeddings: jax.Array, labels: jax.Array,
                           prototypes: jax.Array, *, prototype_mask: jax.Array | None = None,
                           valid: jax.Array | None = None,
                           temperature: float = DEFAULT_TEMPERATURE) -> jax.Array:
  r"""Feature-prototype contrast L_fh (eq. 7) or L_fl (eq. 9).

    L = -1/|N*| \sum_n log \frac{\exp(s(z~_n, p_{y_n}) / \tau)}{\sum_c \exp(s(z~_n, p_c) / \tau)}

  with s(a, b) = -||a - b||^2. Pass high-level labels and M^H for L_fh, low-level labels
  and M^L for L_fl.

  Args:
    embeddings: (N, d) pixel embeddings.
    labels: (N,) int class of each pixel at the prototypes' level.
    prototypes: (K, d) prototypes p_c.
    prototype_mask: optional (K,) bool of classes that have a prototype; others are
      left out of the denominator, and pixels of such a class out of the mean.
    valid: optional (N,) bool of pixels to count (|N*| is their number).
    temperature: tau.

  Returns:
    Scalar mean over valid pixels (0 if none).
  """
  num_classes = prototypes.shape[0]
  if prototype_mask is None:
    prototype_mask = jnp.ones((num_classes,), bool)
  in_range = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(in_range, labels, 0)
  valid = in_range & prototype_mask[safe] & (True if valid is None else valid)
  logits = -squared_distances(embeddings, prototypes) / temperature
  logits = jnp.where(prototype_mask[None, :], logits, _NEG)
  positive = jnp.take_along_axis(logits, safe[:, None], axis=1)[:, 0]
  nll = jax.nn.logsumexp(logits, axis=1) - positive
  return _safe_mean(nll, valid)


def _distinct_pairs(mask: jax.Array) -> jax.Array:
  k = mask.shape[0]
  return mask[:, None] & mask[None, :] & ~jnp.eye(k, dtype=bool)


def prototype_repulsion_loss(prototypes: jax.Array, *, mask: jax.Array | None = None,
                             temperature: float = DEFAULT_REPULSION_TEMPERATURE
                             ) -> jax.Array:
  r"""Prototype-prototype repulsion L_hh (eq. 8) / L_ll (eq. 10).

    L = 1/(K (K - 1)) \sum_{i != k} \exp(s(p_i, p_k) / \kappa)

  over the K classes of `mask` (all if None); 0 with fewer than two classes.
  """
  k = prototypes.shape[0]
  mask = jnp.ones((k,), bool) if mask is None else mask
  values = jnp.exp(-squared_distances(prototypes, prototypes) / temperature)
  return _safe_mean(values, _distinct_pairs(mask))


def alignment_in_loss(low: jax.Array, high: jax.Array, parent: jax.Array, *,
                      low_mask: jax.Array | None = None, high_mask: jax.Array | None = None,
                      margin: float = PAPER_MARGIN_IN) -> jax.Array:
  r"""Low-to-high proximity L_align.in, eq. (11).

    L = 1/|Y^L| \sum_{j} max(0, \delta(l_j, h_{\pi(j)}) - \sigma_1)

  Args:
    low: (K_L, d) low-level prototypes l_j.
    high: (K_H, d) high-level prototypes h_i.
    parent: (K_L,) int, pi(j).
    low_mask, high_mask: optional bool masks of classes with a prototype; a low class
      counts when it and its parent have one (|Y^L| is that number).
    margin: sigma_1 (0.25 in the paper).
  """
  parent = jnp.asarray(parent)
  low_mask = jnp.ones(low.shape[:1], bool) if low_mask is None else low_mask
  high_mask = jnp.ones(high.shape[:1], bool) if high_mask is None else high_mask
  diff = low - high[parent]
  delta = jnp.sqrt(jnp.maximum(jnp.sum(diff * diff, -1), _DISTANCE_EPS))
  return _safe_mean(jax.nn.relu(delta - margin), low_mask & high_mask[parent])


def alignment_out_loss(high: jax.Array, *, mask: jax.Array | None = None,
                       margin: float = PAPER_MARGIN_OUT) -> jax.Array:
  r"""Inter-high separation L_align.out, eq. (12).

    L = 1/(K_H (K_H - 1)) \sum_{i != k} max(0, \sigma_2 - \delta(h_i, h_k))
  """
  k = high.shape[0]
  mask = jnp.ones((k,), bool) if mask is None else mask
  return _safe_mean(jax.nn.relu(margin - distances(high, high)), _distinct_pairs(mask))


def alignment_loss(low: jax.Array, high: jax.Array, parent: jax.Array, *,
                   low_mask: jax.Array | None = None, high_mask: jax.Array | None = None,
                   alpha: float = 1.0, beta: float = 1.0,
                   margin_in: float = PAPER_MARGIN_IN,
                   margin_out: float = PAPER_MARGIN_OUT) -> jax.Array:
  """L_align = alpha L_align.in + beta L_align.out, eq. (13) (needs sigma_1 < sigma_2)."""
  if not 0.0 < margin_in < margin_out:
    raise ValueError(f"alignment_loss: margins should satisfy 0 < margin_in < margin_out "
                     f"(eq. 13), got margin_in={margin_in}, margin_out={margin_out}")
  return (alpha * alignment_in_loss(low, high, parent, low_mask=low_mask,
                                    high_mask=high_mask, margin=margin_in)
          + beta * alignment_out_loss(high, mask=high_mask, margin=margin_out))


# -- schedule ------------------------------------------------------------------------

class LossWeights(NamedTuple):
  """lambda_1..lambda_6 of eq. (14) (defaults: module docstring)."""
  ce: float = 1.0
  fh: float = 0.1
  hh: float = 0.1
  fl: float = 0.1
  ll: float = 0.1
  align: float = 0.1


def phase_switch_steps(total_steps: int, *,
                       phase_starts: Sequence[float] = PAPER_PHASE_STARTS
                       ) -> tuple[int, int, int]:
  """First step of the high-level, low-level and alignment phases (host-side ints).

  Phase boundaries are the first steps with step >= fraction * total_steps, i.e.
  ceil(fraction * total_steps): with 1000 steps, 75, 225 and 375.
  """
  if total_steps < 1:
    raise ValueError(f"phase_switch_steps: total_steps={total_steps} should be >= 1")
  starts = tuple(float(f) for f in phase_starts)
  if len(starts) != 3 or not 0.0 <= starts[0] <= starts[1] <= starts[2] <= 1.0:
    raise ValueError(f"phase_switch_steps: phase_starts={tuple(phase_starts)} should be "
                     "three non-decreasing fractions in [0, 1] (paper: 0.075, 0.225, "
                     "0.375)")
  return tuple(int(math.ceil(f * total_steps - 1e-9)) for f in starts)


def training_phase(step, total_steps: int, *,
                   phase_starts: Sequence[float] = PAPER_PHASE_STARTS) -> jax.Array:
  """0: features only, 1: + high-level prototypes, 2: + low-level, 3: + alignment."""
  switches = jnp.asarray(phase_switch_steps(total_steps, phase_starts=phase_starts))
  return jnp.sum(jnp.asarray(step) >= switches).astype(jnp.int32)


def loss_weights(step, total_steps: int, *, weights: LossWeights = LossWeights(),
                 phase_starts: Sequence[float] = PAPER_PHASE_STARTS,
                 staged: bool = True) -> LossWeights:
  """The weights of eq. (14) at `step` under the phased schedule (jit-able in `step`).

  Before the first switch only the cross-entropy is on ("feature representations
  only"); L_fh and L_hh join at the first switch, L_fl and L_ll at the second and
  L_align at the third. `staged=False` is the joint training of Table 12: every
  weight from step 0.
  """
  if not staged:
    return LossWeights(*(jnp.asarray(w, jnp.float32) for w in weights))
  phase = training_phase(step, total_steps, phase_starts=phase_starts)
  on = lambda first_phase, w: jnp.where(phase >= first_phase, w, 0.0).astype(jnp.float32)
  return LossWeights(ce=jnp.asarray(weights.ce, jnp.float32),
                     fh=on(1, weights.fh), hh=on(1, weights.hh),
                     fl=on(2, weights.fl), ll=on(2, weights.ll),
                     align=on(3, weights.align))


def total_loss(terms: dict, weights: LossWeights) -> jax.Array:
  """Eq. (14): lambda_1 L_ce + lambda_2 L_fh + ... + lambda_6 L_align.

  `terms` needs the keys ce, fh, hh, fl, ll and align (`hiposeg_losses` gives all but
  ce). A term with weight 0 is multiplied by 0, so its (finite) value does not matter.
  """
  missing = [name for name in LossWeights._fields if name not in terms]
  if missing:
    raise ValueError(f"total_loss: terms lacks {missing}; needs {list(LossWeights._fields)}")
  return sum(getattr(weights, name) * terms[name] for name in LossWeights._fields)


# -- pixels --------------------------------------------------------------------------

def sample_pixels(rng: jax.Array, labels: jax.Array, num_samples: int, *,
                  num_classes: int, class_balanced: bool = True
                  ) -> tuple[jax.Array, jax.Array]:
  """`num_samples` distinct pixel indices per image, fixed shape, without replacement.

  Gumbel top-k over the valid pixels (labels in [0, num_classes)): uniformly, or with
  `class_balanced` each pixel weighted by 1 / (pixels of its class in the image) so that
  every class present is equally likely.

  Args:
    rng: PRNG key.
    labels: (B, P) int labels (flattened pixels).
    num_samples: N <= P.

  Returns:
    (indices (B, N) int32 into P, valid (B, N) bool: False where the image had fewer
    than N valid pixels and padding was drawn).
  """
  batch, pixels = labels.shape
  if not 0 < num_samples <= pixels:
    raise ValueError(f"sample_pixels: num_samples={num_samples} should be in 1..{pixels} "
                     "(the pixels per image)")
  valid = (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, num_classes)
  if class_balanced:
    counts = jax.vmap(lambda l: jnp.bincount(l, length=num_classes + 1))(safe)
    log_weight = -jnp.log(jnp.maximum(jnp.take_along_axis(counts, safe, 1), 1)
                          .astype(jnp.float32))
  else:
    log_weight = jnp.zeros((batch, pixels), jnp.float32)
  scores = log_weight + jax.random.gumbel(rng, (batch, pixels))
  scores = jnp.where(valid, scores, -jnp.inf)
  top, indices = jax.lax.top_k(scores, num_samples)
  return indices.astype(jnp.int32), jnp.isfinite(top)


# -- one batch -----------------------------------------------------------------------

def _targets(batch: jax.Array, counts: jax.Array, memory: PrototypeMemory, source: str
             ) -> tuple[jax.Array, jax.Array]:
  """Prototypes (and which classes have one) for a loss term: see the module docstring."""
  stored = jax.lax.stop_gradient(memory.prototypes)
  if source == "memory":
    return stored, memory.seen
  present = counts > 0
  return jnp.where(present[:, None], batch, stored), present | memory.seen


def hiposeg_losses(embeddings: jax.Array, labels: jax.Array, parent: jax.Array,
                   memory: HierarchicalMemory, rng: jax.Array, *,
                   num_samples: int = 1024, class_balanced: bool = True,
                   feature_targets: str = "memory", prototype_targets: str = "batch",
                   temperature: float = DEFAULT_TEMPERATURE,
                   repulsion_temperature: float = DEFAULT_REPULSION_TEMPERATURE,
                   alpha: float = 1.0, beta: float = 1.0,
                   margin_in: float = PAPER_MARGIN_IN, margin_out: float = PAPER_MARGIN_OUT,
                   momentum: float = PAPER_MOMENTUM, renormalize: bool = True,
                   epsilon: float = 1e-6) -> tuple[dict, HierarchicalMemory]:
  """Every HiPoSeg term of one batch and the memories after eq. (15).

  Args:
    embeddings: (B, h, w, d') unit embeddings z~ (eq. 3), e.g. at stride 4.
    labels: (B, H, W) int low-level (finest) labels; values outside [0, K_L) (the ignore
      label) are ignored. Resized to (h, w) by nearest pixel.
    parent: (K_L,) int pi (`LabelTree.fine_to_level(1)`); K_H = memory.high size.
    memory: the memories before this batch.
    rng: key for the pixel sampling.
    other options: module docstring.

  Returns:
    ({"fh", "hh", "fl", "ll", "align", "align_in", "align_out"} scalars, new memory).
    Gradients reach `embeddings` only; the memory is updated under stop_gradient.
  """
  _check_choice("feature_targets", feature_targets, FEATURE_TARGETS)
  _check_choice("prototype_targets", prototype_targets, PROTOTYPE_TARGETS)
  if not 0.0 < margin_in < margin_out:
    raise ValueError(f"hiposeg_losses: margins should satisfy 0 < margin_in < margin_out "
                     f"(eq. 13), got margin_in={margin_in}, margin_out={margin_out}")
  batch, height, width, dim = embeddings.shape
  num_high, num_low = memory.high.prototypes.shape[0], memory.low.prototypes.shape[0]
  parent = jnp.asarray(parent, jnp.int32)
  if parent.shape != (num_low,):
    raise ValueError(f"hiposeg_losses: parent has shape {parent.shape}; expected "
                     f"({num_low},), one high-level class per low-level class of M^L")
  low_labels = segments.resize_labels_nearest(labels, height, width, pixel_centres=True).reshape(batch, -1)
  in_range = (low_labels >= 0) & (low_labels < num_low)
  high_labels = jnp.where(in_range, parent[jnp.where(in_range, low_labels, 0)], -1)
  flat = embeddings.reshape(batch * height * width, dim)

  low_batch, low_counts = batch_prototypes(flat, low_labels, num_low, epsilon=epsilon)
  high_batch, high_counts = batch_prototypes(flat, high_labels, num_high, epsilon=epsilon)
  update = lambda m, p, c: update_memory(m, p, c, momentum=momentum, renormalize=renormalize)
  new_memory = HierarchicalMemory(update(memory.high, high_batch, high_counts),
                                  update(memory.low, low_batch, low_counts))

  indices, sampled = sample_pixels(rng, low_labels, num_samples, num_classes=num_low,
                                   class_balanced=class_balanced)
  picked = jnp.take_along_axis(embeddings.reshape(batch, -1, dim), indices[..., None], 1)
  picked = picked.reshape(-1, dim)
  picked_low = jnp.take_along_axis(low_labels, indices, 1).reshape(-1)
  picked_high = jnp.take_along_axis(high_labels, indices, 1).reshape(-1)
  sampled = sampled.reshape(-1)

  feature_high = _targets(high_batch, high_counts, new_memory.high, feature_targets)
  feature_low = _targets(low_batch, low_counts, new_memory.low, feature_targets)
  terms = {
      "fh": feature_prototype_loss(picked, picked_high, feature_high[0],
                                   prototype_mask=feature_high[1], valid=sampled,
                                   temperature=temperature),
      "fl": feature_prototype_loss(picked, picked_low, feature_low[0],
                                   prototype_mask=feature_low[1], valid=sampled,
                                   temperature=temperature),
  }
  high, high_mask = _targets(high_batch, high_counts, new_memory.high, prototype_targets)
  low, low_mask = _targets(low_batch, low_counts, new_memory.low, prototype_targets)
  terms["hh"] = prototype_repulsion_loss(high, mask=high_mask,
                                         temperature=repulsion_temperature)
  terms["ll"] = prototype_repulsion_loss(low, mask=low_mask,
                                         temperature=repulsion_temperature)
  terms["align_in"] = alignment_in_loss(low, high, parent, low_mask=low_mask,
                                        high_mask=high_mask, margin=margin_in)
  terms["align_out"] = alignment_out_loss(high, mask=high_mask, margin=margin_out)
  terms["align"] = alpha * terms["align_in"] + beta * terms["align_out"]
  return terms, new_memory
