"""HiPoSeg's training-only projection head g_phi (Lim et al., section 3.1, eq. 3).

g_phi maps pixel features to R^{d'} and the result is l2-normalised (eq. 3). The paper
trains "embeddings from multiple feature stages" (section 1) without saying which; here
the head reads any subset of DeepLabV3+'s intermediate features
(`jhseg.models.deeplab.DeepLabOutputs`): `decoder` (stride 4, before the classifier),
`aspp` (stride OS, resized bilinearly to stride 4) and `low_level` (the projected stride-4
skip), concatenated and passed through

  1x1 conv (C -> C, no bias) - BatchNorm - ReLU - 1x1 conv (C -> d'),   then / ||.||_2,

the two-layer "convmlp" projection of the pixel-contrast methods HiPoSeg builds on
(ContrastSeg, Wang et al. ICCV 2021; ProtoSeg, Zhou et al. CVPR 2022).

Choices (keyword options):
  * stages = ("decoder", "aspp"): the decoder output carries the features the classifier
    sees (so the prototype losses shape them directly) and the ASPP output the
    object-level context the high-level prototypes need; together they are the
    "multiple feature stages". The stride-4 resolution keeps small parts.
  * dim (d') = 256, ContrastSeg's projection size.
The head is not part of the inference network: DeepLabV3+ logits do not depend on it.

`PrototypeBank` holds the memories M^H, M^L (eq. 4) as non-trainable state updated once
per optimizer update (eq. 15); `HiPoSegNetwork` bundles DeepLabV3+, the head and the bank
and runs only DeepLabV3+ when called (zero inference cost).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from jhseg.losses import hiposeg as losses
from jhseg.models import deeplab
from jhseg.models.spherical_kmeans import unit_normalize

FEATURE_STAGES = ("decoder", "aspp", "low_level")
DEFAULT_STAGES = ("decoder", "aspp")
DEFAULT_DIM = 256


def stage_features(model: deeplab.DeepLabV3Plus) -> dict[str, int]:
  """Channels of each feature stage of a DeepLabV3+ model."""
  options = model.options
  return {"decoder": options["decoder_features"], "aspp": options["aspp_features"],
          "low_level": options["low_level_features"]}


class ProjectionHead(nnx.Module):
  """g_phi: selected DeepLabV3+ features -> unit embeddings (B, H/4, W/4, dim)."""

  def __init__(self, features: Mapping[str, int], *,
               stages: Sequence[str] = DEFAULT_STAGES, dim: int = DEFAULT_DIM,
               rngs: nnx.Rngs):
    stages = tuple(stages)
    unknown = [s for s in stages if s not in FEATURE_STAGES]
    if not stages or unknown:
      raise ValueError(f"ProjectionHead: stages={stages} should be a non-empty subset of "
                       f"{list(FEATURE_STAGES)}")
    missing = [s for s in stages if s not in features]
    if missing:
      raise ValueError(f"ProjectionHead: no channel count given for stages {missing}; "
                       f"got {dict(features)}")
    if int(dim) < 1:
      raise ValueError(f"ProjectionHead: dim={dim} should be a positive integer (d')")
    self.stages = stages
    self.dim = int(dim)
    channels = sum(int(features[s]) for s in stages)
    self.conv1 = nnx.Conv(channels, channels, (1, 1), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(channels, use_running_average=False, momentum=0.9,
                            epsilon=1e-5, rngs=rngs)
    self.conv2 = nnx.Conv(channels, self.dim, (1, 1), rngs=rngs)

  def __call__(self, outputs: deeplab.DeepLabOutputs) -> jax.Array:
    size = outputs.decoder.shape[1:3]
    parts = []
    for stage in self.stages:
      x = getattr(outputs, stage)
      if x.shape[1:3] != size:
        x = deeplab.resize_bilinear(x, *size)
      parts.append(x.astype(jnp.float32))
    x = jnp.concatenate(parts, axis=-1)
    return unit_normalize(self.conv2(nnx.relu(self.bn(self.conv1(x)))))


class MemoryEntries(nnx.Variable):
  """Prototype memory state (eq. 4): not a parameter, changed by eq. 15 only; saved in
  checkpoints with the rest of the model state."""


class PendingSums(nnx.Variable):
  """Class sums of the micro-batches since the last optimizer update (eq. 5's numerator
  and denominator); eq. 15 consumes and clears them once per update."""


class PrototypeBank(nnx.Module):
  """M^H and M^L (eq. 4) with the batch statistics waiting for their eq.-15 update.

  The memory changes once per optimizer update (`commit`, called from the task's
  `after_update`): under gradient accumulation the micro-batches' class sums add up
  (`accumulate`, inside the loss under stop_gradient) and the update uses the
  prototypes of the whole accumulated batch, as one paper iteration would.
  """

  def __init__(self, num_high: int, num_low: int, dim: int):
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
    self.high = MemoryEntries(zeros(num_high, dim))
    self.high_seen = MemoryEntries(jnp.zeros((num_high,), bool))
    self.low = MemoryEntries(zeros(num_low, dim))
    self.low_seen = MemoryEntries(jnp.zeros((num_low,), bool))
    self.high_sums = PendingSums(zeros(num_high, dim))
    self.high_counts = PendingSums(zeros(num_high))
    self.low_sums = PendingSums(zeros(num_low, dim))
    self.low_counts = PendingSums(zeros(num_low))

  def memory(self):
    """The memories as `jhseg.losses.hiposeg.HierarchicalMemory` (no gradient)."""
    sg = jax.lax.stop_gradient
    return losses.HierarchicalMemory(
        losses.PrototypeMemory(sg(self.high[...]), self.high_seen[...]),
        losses.PrototypeMemory(sg(self.low[...]), self.low_seen[...]))

  def accumulate(self, high: tuple[jax.Array, jax.Array],
                 low: tuple[jax.Array, jax.Array]) -> None:
    """Adds one micro-batch's (sums, counts) per level (`losses.hiposeg.class_sums`)."""
    sg = jax.lax.stop_gradient
    self.high_sums[...] += sg(high[0])
    self.high_counts[...] += sg(high[1])
    self.low_sums[...] += sg(low[0])
    self.low_counts[...] += sg(low[1])

  def commit(self, *, momentum: float, renormalize: bool, epsilon: float) -> None:
    """Eq. 15 with the accumulated batch prototypes; clears the sums."""
    memory = self.memory()
    for name, entry in (("high", memory.high), ("low", memory.low)):
      sums, counts = getattr(self, f"{name}_sums"), getattr(self, f"{name}_counts")
      prototypes = losses.prototypes_from_sums(sums[...], counts[...], epsilon=epsilon)
      new = losses.update_memory(entry, prototypes, counts[...], momentum=momentum,
                                 renormalize=renormalize)
      getattr(self, name)[...] = new.prototypes
      getattr(self, f"{name}_seen")[...] = new.seen
      sums[...] = jnp.zeros_like(sums[...])
      counts[...] = jnp.zeros_like(counts[...])


class HiPoSegNetwork(nnx.Module):
  """The segmentation network plus HiPoSeg's training-only parts.

  `model(images)` is the segmentation network alone (logits): inference never runs
  the projection head nor reads the memories, so it costs what the baseline costs.
  Without `head` (the baseline) the model is the plain segmentation network in the
  same wrapper, so both variants share checkpoints' parameter names.
  """

  def __init__(self, segmenter: deeplab.DeepLabV3Plus, head: ProjectionHead | None = None,
               prototypes: PrototypeBank | None = None):
    if (head is None) != (prototypes is None):
      raise ValueError("HiPoSegNetwork: give both the projection head and the prototype "
                       "bank (HiPoSeg) or neither (baseline)")
    self.segmenter = segmenter
    self.head = head
    self.prototypes = prototypes

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.segmenter(images)
