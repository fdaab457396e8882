"""Resuming with a changed config (issue 11, point 3): shape-changing fields refuse before
anything is written; the schedule length and cadences may change and are recorded."""
import json
import os

import pytest

from experiments.configs import ultrametric
from jhseg.train import run_config


def _finished_run(tmp_path):
  """A workdir as a run leaves it: config.json, history and a checkpoint folder."""
  config = ultrametric.get_config("tiny")
  run_config.prepare(config, str(tmp_path))
  os.makedirs(tmp_path / "checkpoints" / "60")
  return config


def test_new_run_writes_config_and_its_first_history_line(tmp_path):
  config = ultrametric.get_config("tiny")
  assert run_config.prepare(config, str(tmp_path)) == {}
  stored = json.loads((tmp_path / "config.json").read_text())
  assert stored["model"]["width"] == config.model.width
  (line,) = (tmp_path / "config_history.jsonl").read_text().splitlines()
  assert json.loads(line)["resumed"] is False


def test_changed_model_refuses_listing_the_fields_and_writes_nothing(tmp_path):
  config = _finished_run(tmp_path)
  before = {p: (tmp_path / p).read_text() for p in ("config.json", "config_history.jsonl")}
  width = config.model.width
  config.model.width = 2 * width
  config.data.batch_size = 2 * config.data.batch_size
  config.num_train_steps = 100  # May change: not among the fields listed as refused.
  with pytest.raises(run_config.ConfigMismatchError) as err:
    run_config.prepare(config, str(tmp_path))
  message = str(err.value)
  assert f"model.width: {width} -> {2 * width}" in message
  assert "data.batch_size" in message and "num_train_steps" not in message
  assert "\n" not in message
  assert {p: (tmp_path / p).read_text() for p in before} == before


def test_schedule_and_cadence_may_change_and_are_recorded(tmp_path):
  config = _finished_run(tmp_path)
  config.num_train_steps = 120
  config.eval_every_steps = 40
  changes = run_config.prepare(config, str(tmp_path))
  assert changes["num_train_steps"] == [60, 120]
  assert set(changes) == {"num_train_steps", "eval_every_steps"}
  # config.json keeps the configuration the run started with; the history has the change.
  assert json.loads((tmp_path / "config.json").read_text())["num_train_steps"] == 60
  lines = [json.loads(l) for l in (tmp_path / "config_history.jsonl").read_text().splitlines()]
  assert [l["resumed"] for l in lines] == [False, True]
  assert lines[-1]["changed"]["eval_every_steps"][1] == 40
  # The next resume compares with the configuration in force (120 steps), not config.json.
  assert run_config.prepare(config, str(tmp_path)) == {}


def test_other_changes_are_allowed_with_a_warning(tmp_path, caplog):
  config = _finished_run(tmp_path)
  config.optim.learning_rate = 0.5 * config.optim.learning_rate
  assert list(run_config.prepare(config, str(tmp_path))) == ["optim.learning_rate"]


def test_a_placeholder_added_by_the_command_line_is_no_change():
  assert run_config.changed_fields({"a": 1}, {"a": 1, "distributed": {"process_id": None}}) == {}
  assert run_config.changed_fields({"a": [1, 2]}, {"a": [1, 3]}) == {"a": [[1, 2], [1, 3]]}
