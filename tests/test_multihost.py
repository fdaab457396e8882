"""Two JAX processes on loopback (gloo CPU collectives) train like one process."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import pixel_classification
from jhseg.train.checkpointing import read_state_arrays
from jhseg.train import train_and_evaluate

OVERRIDES = {"num_train_steps": 6, "checkpoint_every_steps": 6, "eval_every_steps": 6,
             "log_every_steps": 3, "checkpoint.async": False, "data.num_threads": 0}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def params(workdir):
  path = os.path.join(workdir, "checkpoints", "6", "state")
  return jax.tree.leaves(read_state_arrays(path)["0"])


@pytest.mark.multihost
def test_two_processes_match_one_process_on_four_devices(synthetic_data_dir, tmp_path):
  single = str(tmp_path / "single")
  config = pixel_classification.get_config("tiny")
  config.update_from_flattened_dict(OVERRIDES)
  config.data.data_dir = synthetic_data_dir
  train_and_evaluate(config, single)

  multi = str(tmp_path / "multi")
  port = free_port()
  worker = os.path.join(os.path.dirname(__file__), "multihost_worker.py")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  procs = [subprocess.Popen([sys.executable, worker, str(p), str(port), synthetic_data_dir, multi,
                             json.dumps(OVERRIDES)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for p in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]

  # Same up to float32 summation order: gloo's cross-process all-reduce adds the gradient
  # shards in another order than one process does; after 6 Adam steps (lr 3e-3) that is
  # ~4e-5. A wrong data split or a missing all-reduce moves parameters by ~lr per step.
  for a, b in zip(params(single), params(multi), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4)
  reads = [json.load(open(os.path.join(multi, f"read_{p}.json"))) for p in range(2)]
  batch = config.data.batch_size
  # Each process read its half of every global batch: 6 steps x 4 examples, no overlap per step.
  assert len(reads[0]) == len(reads[1]) == OVERRIDES["num_train_steps"] * batch // 2
  for step in range(OVERRIDES["num_train_steps"]):
    half = slice(step * batch // 2, (step + 1) * batch // 2)
    assert not set(reads[0][half]) & set(reads[1][half])
