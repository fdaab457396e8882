"""Command-line overrides (issue 11, point 4): every engine field is settable, also where a
config file leaves it out, and an unknown field at any depth fails in one line with the valid
names, before JAX starts."""
import pathlib
import subprocess
import sys

import pytest

from jhseg.train import cli, config_fields

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"


def _build(name, *overrides):
  pairs = [tuple(o.split("=", 1)) for o in overrides]
  return cli.build_config(f"{CONFIGS / name}.py:tiny", pairs)


@pytest.mark.parametrize("name", ["ultrametric", "hsg", "pixel_classification"])
def test_distributed_and_async_fields_are_settable_for_every_config(name):
  config = _build(name, "distributed.coordinator_address=host0:1234",
                  "distributed.num_processes=2", "distributed.process_id=1",
                  "checkpoint.async=False")
  assert config.distributed.coordinator_address == "host0:1234"
  assert (config.distributed.num_processes, config.distributed.process_id) == (2, 1)
  assert config.checkpoint["async"] is False
  config_fields.check_fields(config)


def test_values_are_parsed_to_the_field_type():
  config = _build("ultrametric", "num_train_steps=7", "optim.learning_rate=0.5",
                  "data.data_dir=/tmp/x", "eval_every_steps=None")
  assert config.num_train_steps == 7 and config.optim.learning_rate == 0.5
  assert config.data.data_dir == "/tmp/x" and config.eval_every_steps is None
  with pytest.raises(config_fields.ConfigFieldError, match=r"num_train_steps=ten: .*int"):
    _build("ultrametric", "num_train_steps=ten")


@pytest.mark.parametrize("override, section, valid", [
    ("checkpoint.every_steps=10", "checkpoint", "best_metric, best_mode, keep"),
    ("optim.foo=1", "optim", "b1, b2"),
    ("model.widht=8", "model", "width"),
    ("optim.groups.head.foo=1", None, None),
    ("nonsense.a=1", "", "checkpoint, checkpoint_every_steps"),
])
def test_unknown_field_at_any_depth_names_the_valid_ones(override, section, valid):
  name = override.split("=")[0]
  with pytest.raises(config_fields.ConfigFieldError) as err:
    _build("pixel_classification", override)
  message = str(err.value)
  assert "\n" not in message
  if section is not None:
    where = f"config.{section}" if section else "config"
    assert f"unknown field {where}." in message and valid in message, message
  else:
    assert name.split(".")[1] in message


def test_command_line_error_is_one_line_and_starts_nothing(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "experiments.pixel_classification",
       "--config=experiments/configs/pixel_classification.py:tiny",
       f"--workdir={tmp_path}", "--config.checkpoint.async=False", "--config.optim.foo=1"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines() == [
      "error: unknown field config.optim.foo; valid fields of config.optim: "
      + ", ".join(sorted(config_fields.ENGINE_FIELDS["optim"]))]
  assert not any(tmp_path.iterdir())


def test_zero_training_steps_is_refused_clearly():
  config = _build("pixel_classification", "num_train_steps=0")
  with pytest.raises(config_fields.ConfigFieldError, match=r"num_train_steps=0: expected an "
                     r"integer >= 1.*jhseg\.infer"):
    config_fields.check_fields(config)


def test_engine_table_is_generic_over_nested_sections(monkeypatch):
  # A new engine section of named entries (e.g. evaluators) is a line in ENGINE_FIELDS.
  monkeypatch.setitem(config_fields.ENGINE_FIELDS, "", config_fields.ENGINE_FIELDS[""] +
                      ("evals",))
  monkeypatch.setitem(config_fields.ENGINE_FIELDS, "evals.*", ("dataset", "split", "every"))
  config = _build("pixel_classification")
  import ml_collections
  with config.unlocked():
    config.evals = ml_collections.ConfigDict({"voc": {"dataset": "voc", "split": "val"}})
  config_fields.check_fields(config)
  with config.unlocked():
    config.evals.voc.splt = "val"
  with pytest.raises(config_fields.ConfigFieldError,
                     match=r"config\.evals\.voc\.splt; valid fields of config\.evals\.voc: "
                     r"dataset, every, split"):
    config_fields.check_fields(config)


# Run inside a fresh Python: the entry point with a wrong field, then which heavy libraries
# were imported by the time the command stopped.
_ENTRY_POINT_PROBE = """
import sys
from absl import app
import importlib
entry = importlib.import_module("experiments." + sys.argv.pop(1))
try:
  app.run(entry.main)
except SystemExit as stop:
  heavy = [m for m in ("jax", "flax", "optax", "tensorflow", "grain") if m in sys.modules]
  print("stopped", stop.code, "heavy", heavy)
"""


@pytest.mark.parametrize("method", ["ultrametric", "hsg", "cast", "del", "hiposeg"])
def test_config_error_stops_before_jax_is_imported(tmp_path, method):
  result = subprocess.run(
      [sys.executable, "-c", _ENTRY_POINT_PROBE, method,
       f"--config=experiments/configs/{method}.py:tiny", f"--workdir={tmp_path}",
       "--config.no_such_field=1"],
      capture_output=True, text=True, cwd=ROOT, timeout=120)
  stdout = result.stdout.strip().splitlines()
  assert stdout and stdout[-1].startswith("stopped error: unknown field config.no_such_field"), (
      result.stdout + result.stderr)
  assert stdout[-1].endswith("heavy []"), stdout[-1]
