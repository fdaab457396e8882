"""Device placement helpers of the engine (4 fake CPU devices, see conftest.py)."""
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from jhseg.train import devices


def test_replicate_places_arrays_and_prng_keys_on_every_device():
  mesh = devices.make_data_mesh()
  rngs = nnx.Rngs(dropout=3)
  tree = {"w": jnp.arange(6.0).reshape(2, 3), "key": nnx.state(rngs)["dropout"]["key"][...]}
  out = devices.replicate(tree, mesh)
  assert jax.dtypes.issubdtype(out["key"].dtype, jax.dtypes.prng_key)
  for leaf in jax.tree.leaves(out):
    assert leaf.sharding == devices.replicated(mesh)
    assert len(leaf.sharding.device_set) == jax.device_count() == 4
  np.testing.assert_array_equal(out["w"], tree["w"])
  np.testing.assert_array_equal(jax.random.key_data(out["key"]),
                                jax.random.key_data(tree["key"]))
  # Same key, same random bits: the replicated key is the original one.
  np.testing.assert_array_equal(jax.random.uniform(out["key"], (3,)),
                                jax.random.uniform(tree["key"], (3,)))
