"""One process of the two-process tests in test_multihost.py (not a test itself).

usage: python tests/multihost_worker.py PROCESS_ID PORT DATA_DIR WORKDIR CONFIG_MODULE VARIANT \
         OVERRIDES_JSON

CONFIG_MODULE names a module of experiments/configs (e.g. `pixel_classification`, `hsg`)
whose `get_config(VARIANT)` is updated with the flattened OVERRIDES_JSON.
"""
import builtins
import importlib
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"
# The compile flags of tests/conftest.py (TEST_XLA_FLAGS), which this script cannot import.
os.environ["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=2 "
                           "--xla_backend_optimization_level=0")

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jhseg.data import sources  # noqa: E402
from jhseg.train import train_and_evaluate  # noqa: E402


def main(process_id: str, port: str, data_dir: str, workdir: str, config_module: str,
         variant: str, overrides: str) -> None:
  configs = importlib.import_module(f"experiments.configs.{config_module}")
  config = configs.get_config(variant)
  config.update_from_flattened_dict(json.loads(overrides))
  config.data.data_dir = data_dir
  config.distributed = {"coordinator_address": f"localhost:{port}", "num_processes": 2,
                         "process_id": int(process_id), "cpu_collectives": "gloo"}
  # Record which examples this process reads from the training split.
  read = []
  load = sources.load_source

  def recording_load(data, split):
    source = load(data, split)
    if split != data.get("train_split"):  # evaluators read other splits
      return source

    class Recording:
      def __len__(self):
        return len(source)

      def __getitem__(self, i):
        read.append(int(i))
        return source[i]

    return Recording()

  sources.load_source = recording_load
  import jhseg.train.loop as loop
  loop.data_lib.load_source = recording_load
  # Record the files this process opens for writing under workdir/eval (summary.json
  # by json.dump, PNGs by matplotlib and Pillow all go through builtins.open).
  written, root = [], os.path.abspath(workdir)
  builtin_open = builtins.open

  def recording_open(file, mode="r", *args, **kwargs):
    path = os.path.abspath(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
    if any(m in mode for m in "wax+") and path.startswith(os.path.join(root, "eval")):
      written.append(os.path.relpath(path, root))
    return builtin_open(file, mode, *args, **kwargs)

  builtins.open = recording_open
  train_and_evaluate(config, workdir)
  builtins.open = builtin_open
  assert jax.process_count() == 2 and jax.device_count() == 4
  with open(os.path.join(workdir, f"read_{process_id}.json"), "w") as f:
    json.dump(read, f)
  with open(os.path.join(workdir, f"eval_writes_{process_id}.json"), "w") as f:
    json.dump(sorted(set(written)), f)


if __name__ == "__main__":
  main(*sys.argv[1:])
