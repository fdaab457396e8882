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
"""
from __future__ import annotations

from typing import Mapping, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

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
