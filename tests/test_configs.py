"""Every experiment config resolves: its fields are known and its task exists."""
import importlib
import pathlib
import subprocess
import sys

import pytest

from jhseg.tasks import TASKS
from jhseg.train.config_fields import check_fields

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "configs"
# Modules starting with "_" (`_engine`, the shared engine part) are not configs.
CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))


def test_there_are_configs():
  assert "pixel_classification" in CONFIGS


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("variant", [None, "tiny"])
def test_config_resolves(name, variant):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config(variant)
  check_fields(config)
  assert config.task in TASKS
  assert config.num_train_steps > 0
  if variant == "tiny":
    assert config.num_train_steps <= 500


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_is_an_error(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  with pytest.raises(ValueError, match="tiny"):
    module.get_config("huge")


def test_command_line_override_typo_fails_before_training(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.pixel_classification",
       "--config=experiments/configs/pixel_classification.py:tiny",
       f"--workdir={tmp_path}", "--config.optim.learnig_rate=0.1"],
      capture_output=True, text=True, cwd=CONFIG_DIR.parents[1], timeout=120)
  assert result.returncode != 0
  assert "learnig_rate" in result.stderr
  assert not (tmp_path / "checkpoints").exists()
