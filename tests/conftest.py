"""Test-wide setup: four fake CPU devices and the shared real-data samples.

The device count must be fixed before JAX initialises its backend, so it is set
here, at import time of the first conftest, before any test module imports jax.
"""
import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """`../shared/data` beside the checkout; skips when a fresh clone lacks it."""
  if not SHARED_DATA.is_dir():
    pytest.skip(f"real sample data not found at {SHARED_DATA} (see shared/data/README.md)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding `synthetic_scenes/tiny`, built once per session."""
  from jhseg.data.sources import prepared_builder

  data_dir = str(tmp_path_factory.mktemp("tfds"))
  prepared_builder("synthetic_scenes/tiny", data_dir)
  return data_dir


@pytest.fixture(name="bench", scope="session")
def bsds_bench(shared_data):
  """`../shared/data/bsds500_bench`: the official BSDS benchmark sample and its outputs."""
  root = shared_data / "bsds500_bench"
  if not root.is_dir():
    pytest.skip(f"BSDS benchmark sample not found at {root}")
  return root
