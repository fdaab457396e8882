"""Test-wide setup: four fake CPU devices, cheap compilation, the shared real-data samples.

The device count and the XLA flags must be fixed before JAX initialises its backend,
so they are set here, at import time of the first conftest, before any test module
imports jax. Subprocesses started by tests inherit the flags through the environment.

Compilation: the suite compiles thousands of small XLA programs and runs each a few
times, so compile time is most of its time. XLA:CPU's LLVM optimisations (level 2 by
default) cost far more than they save here: measured on the shared 2-core machine,
compiling `jax.random.normal(key, (3, 3, 16, 16))` takes 12 s at the default level and
0.8 s at level 0 (the threefry hash of every random initialiser), HSG's loss and
gradient 30 s vs 16 s of CPU for a step 4x slower to run (0.14 vs 0.03 s), with the same
loss to the last digit. Level 0 changes LLVM's code generation only, not XLA's HLO passes.
"""
import os
import pathlib
import shutil
import tempfile

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if TEST_XLA_FLAGS not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()
# One persistent compilation cache per test run, shared by the pytest-xdist workers and
# the subprocesses they start (all inherit these variables): a program compiled again (a
# new jitted closure of the same computation, e.g. the train step of the same tiny config
# in another test) is read back instead. Removed at the end of the run by the process
# that created it; a JAX_COMPILATION_CACHE_DIR set by the caller is used as it is.
_CACHE_OWNER = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _CACHE_OWNER:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jhseg-test-xla-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
# Again through the config, in case a pytest plugin imported jax before this file.
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1.0)))

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


# The trained `hsg:tiny` run of `hsg_tiny_run`: 3 steps, then the evaluation of 6
# validation images (two batches of 4, the second one padded) with a retrieval memory of 8.
# One encoder and one decoder layer per clustering transformer (tiny: 2 + 2): compiling the
# train step is most of the run's time (the 2 + 2 layers are built and run in
# test_hsg_task's inference test, the layers themselves in test_clustering_transformer).
HSG_TINY_RUN = {"num_train_steps": 3, "checkpoint_every_steps": 3, "evals.val.every_steps": 3,
                "log_every_steps": 3, "evals.val.num_examples": 6,
                "eval.num_memory_examples": 8, "model.transformer.num_encoder_layers": 1,
                "model.transformer.num_decoder_layers": 1}
# Tests that use `hsg_tiny_run` are marked `@pytest.mark.xdist_group("hsg_tiny_run")`:
# pytest-xdist (`--dist loadgroup`, setup.cfg) then runs them in one worker, which trains
# the run once for all of them (they only read it).


@pytest.fixture(scope="session")
def hsg_tiny_run(synthetic_data_dir, tmp_path_factory):
  """(config, workdir, summary) of one `hsg:tiny` run with `HSG_TINY_RUN`, trained once per
  session (per xdist worker) for the HSG end-to-end and inference tests: compiling HSG's
  train step and evaluation is most of each of those tests' time."""
  return _trained_tiny_run("hsg", HSG_TINY_RUN, synthetic_data_dir, tmp_path_factory)


# The trained `ultrametric:tiny` run of `ultrametric_tiny_run`: 3 steps, a checkpoint and
# the validation loss at every step (for --best), the hierarchy evaluation of 6 validation
# images (two batches of 4, the second one padded) at the last step only.
ULTRAMETRIC_TINY_RUN = {"num_train_steps": 3, "log_every_steps": 1, "checkpoint_every_steps": 1,
                        "checkpoint.keep": 3, "evals.val.every_steps": 1,
                        "eval.hierarchy_every_steps": 3, "data.batch_size": 4,
                        "evals.val.batch_size": 4, "evals.val.num_examples": 6}


@pytest.fixture(scope="session")
def ultrametric_tiny_run(synthetic_data_dir, tmp_path_factory):
  """(config, workdir, summary) of one `ultrametric:tiny` run with `ULTRAMETRIC_TINY_RUN`,
  trained once per session (per xdist worker, group "ultrametric_tiny_run" as above) for the
  Ultrametric end-to-end and inference tests."""
  return _trained_tiny_run("ultrametric", ULTRAMETRIC_TINY_RUN, synthetic_data_dir,
                           tmp_path_factory)


def _trained_tiny_run(method: str, overrides: dict, data_dir: str, tmp_path_factory):
  """(config, workdir, summary) of `<method>.py:tiny` with `overrides`, trained in a fresh
  session temporary folder."""
  import importlib  # pylint: disable=g-import-not-at-top
  from jhseg.train import train_and_evaluate  # pylint: disable=g-import-not-at-top

  config = importlib.import_module(f"experiments.configs.{method}").get_config("tiny")
  config.update_from_flattened_dict(overrides)
  config.data.data_dir = data_dir
  workdir = tmp_path_factory.mktemp(f"{method}_tiny_run")
  summary = train_and_evaluate(config, str(workdir))
  return config, workdir, summary


@pytest.fixture(name="bench", scope="session")
def bsds_bench(shared_data):
  """`../shared/data/bsds500_bench`: the official BSDS benchmark sample and its outputs."""
  root = shared_data / "bsds500_bench"
  if not root.is_dir():
    pytest.skip(f"BSDS benchmark sample not found at {root}")
  return root


def pytest_unconfigure(config):
  del config
  if _CACHE_OWNER:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
