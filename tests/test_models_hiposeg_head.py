"""HiPoSeg's projection head g_phi: stage selection, unit output (eq. 3), errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jhseg.models import deeplab
from jhseg.models import hiposeg_head


def _outputs():
  keys = jax.random.split(jax.random.key(0), 3)
  return deeplab.DeepLabOutputs(
      logits=jnp.zeros((2, 32, 32, 5)),
      decoder=jax.random.normal(keys[0], (2, 8, 8, 6)),
      aspp=jax.random.normal(keys[1], (2, 2, 2, 4)),
      low_level=jax.random.normal(keys[2], (2, 8, 8, 3)))


def test_head_reads_the_selected_stages_and_outputs_unit_vectors():
  features = {"decoder": 6, "aspp": 4, "low_level": 3}
  head = hiposeg_head.ProjectionHead(features, stages=("decoder", "aspp"), dim=5,
                                     rngs=nnx.Rngs(0))
  assert head.conv1.kernel.shape == (1, 1, 10, 10)
  z = nnx.jit(lambda h, o: h(o))(head, _outputs())
  assert z.shape == (2, 8, 8, 5)
  np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)
  # The ASPP stage matters: changing it changes the embeddings.
  other = _outputs()._replace(aspp=jnp.zeros((2, 2, 2, 4)))
  assert not np.allclose(nnx.jit(lambda h, o: h(o))(head, other), z)


def test_stage_features_of_a_model():
  model = nnx.eval_shape(lambda: deeplab.DeepLabV3Plus(
      3, depth=18, width=4, aspp_features=8, low_level_features=3, decoder_features=6,
      rngs=nnx.Rngs(0)))
  assert hiposeg_head.stage_features(model) == {"decoder": 6, "aspp": 8, "low_level": 3}


@pytest.mark.parametrize("kwargs, message", [
    (dict(stages=("decoder", "c5")), "non-empty subset"),
    (dict(stages=()), "non-empty subset"),
    (dict(dim=0), "dim=0"),
])
def test_bad_options_are_named(kwargs, message):
  with pytest.raises(ValueError, match=message):
    hiposeg_head.ProjectionHead({"decoder": 6, "aspp": 4}, rngs=nnx.Rngs(0), **kwargs)
  with pytest.raises(ValueError, match="no channel count"):
    hiposeg_head.ProjectionHead({"decoder": 6}, stages=("decoder", "aspp"),
                                rngs=nnx.Rngs(0))
