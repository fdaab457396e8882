"""Command-line entry shared by the thin mains in `experiments/`.

    python -m experiments.<method> --config=experiments/configs/<method>.py[:tiny] \
        --workdir=DIR [--config.num_train_steps=100 ...]

The config file defines `get_config(arg)`; `--config.<field>=value` overrides
any field (a misspelt field fails with the list of valid ones).
"""
from __future__ import annotations

import os
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs; "
                               "a run resumes from the checkpoints found there.")


def make_main(default_config: str) -> Callable[[list[str]], None]:
  """A `main(argv)` for `absl.app.run`, with `--config` defaulting to `default_config`."""
  config_flag = config_flags.DEFINE_config_file(
      "config", default_config, "Path to a config file, optionally followed by `:variant` "
      "(e.g. `:tiny`).", lock_config=True)

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    from jhseg.train import train_and_evaluate  # Deferred: flags parse before JAX starts.

    logging.set_verbosity(logging.INFO)
    summary = train_and_evaluate(config_flag.value, _WORKDIR.value)
    logging.info("final metrics: %s", summary)
    print({k: round(v, 5) for k, v in sorted(summary.items())})

  return main


def config_path(name: str) -> str:
  """Absolute path of `experiments/configs/<name>.py`."""
  here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(here, "experiments", "configs", f"{name}.py")
