"""What a run writes about itself: each step once in metrics.jsonl after a resume (issue 11,
point 7), a readable console with the full log in run.log (issue 9, point 8), and the
non-finite-loss error when no checkpoint exists yet."""
import json
import logging
import os

import pytest
from absl import logging as absl_logging

from experiments.configs import pixel_classification
from jhseg.train import NonFiniteLossError, train_and_evaluate
from jhseg.train import logging as run_logging
from jhseg.train.run_config import ConfigMismatchError


def _steps(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


def test_resumed_writer_drops_the_records_after_its_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "train/loss": 1.0}) + "\n" for s in (2, 4, 6))
                  + '{"step": 8, "train/lo')  # The last line cut by a kill -9.
  writer = run_logging.MetricWriter(str(tmp_path), total_steps=10, resume_step=4)
  writer.write(6, {"train/loss": 0.5})
  writer.close()
  assert _steps(tmp_path) == [2, 4, 6]
  writer = run_logging.MetricWriter(str(tmp_path), total_steps=10)  # No resume step: kept.
  writer.close()
  assert _steps(tmp_path) == [2, 4, 6]


def _tiny(data_dir, **overrides):
  config = pixel_classification.get_config("tiny")
  config.data.data_dir = data_dir
  del config.evals["test"]
  config.evals.val.every_steps = None  # the last step only
  config.log_every_steps = 1
  config.checkpoint["async"] = False
  config.update(overrides)
  return config


def test_each_step_appears_once_after_a_resume(synthetic_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  train_and_evaluate(_tiny(synthetic_data_dir, num_train_steps=4, checkpoint_every_steps=2),
                     workdir)
  # As if a first run had gone on to step 6 and was killed before checkpointing it.
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write(json.dumps({"step": 5, "train/loss": 9.0}) + "\n")
    f.write(json.dumps({"step": 6, "train/loss": 9.0}) + "\n")
  train_and_evaluate(_tiny(synthetic_data_dir, num_train_steps=6, checkpoint_every_steps=2),
                     workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
  assert 9.0 not in [r.get("train/loss") for r in records]
  pairs = [(r["step"], k) for r in records for k in r if k not in ("step", "time")]
  assert len(pairs) == len(set(pairs))  # No metric twice at a step (eval at the last step).
  history = (tmp_path / "run" / "config_history.jsonl").read_text().splitlines()
  assert json.loads(history[-1])["changed"] == {"num_train_steps": [4, 6]}
  # A wider model refuses to resume, before anything is written (issue 11, point 3).
  before = {n: (tmp_path / "run" / n).read_text() for n in ("config.json",
                                                          "config_history.jsonl")}
  wider = _tiny(synthetic_data_dir, num_train_steps=8, checkpoint_every_steps=2)
  wider.model.width = 16
  with pytest.raises(ConfigMismatchError, match=r"Differing fields: model\.width: 8 -> 16\."):
    train_and_evaluate(wider, workdir)
  assert {n: (tmp_path / "run" / n).read_text() for n in before} == before
  assert not (tmp_path / "run" / "run.lock").exists()


def test_non_finite_loss_without_a_checkpoint_says_there_is_none(synthetic_data_dir, tmp_path):
  config = _tiny(synthetic_data_dir, num_train_steps=4, checkpoint_every_steps=4)
  config.optim.learning_rate = float("nan")
  with pytest.raises(NonFiniteLossError, match=r"step 1\b.*No checkpoint was written yet"):
    train_and_evaluate(config, str(tmp_path / "nan"))


def test_console_shows_own_messages_and_warnings_the_file_everything(tmp_path, capsys):
  root = logging.getLogger()
  handlers, level = list(root.handlers), root.level
  verbosity = absl_logging.get_verbosity()
  try:
    path = run_logging.route_logs(str(tmp_path))
    writer = run_logging.MetricWriter(str(tmp_path), total_steps=10)  # Logs from jhseg.
    writer.progress(3, {"train/loss": 0.25})
    writer.close()
    library = logging.getLogger("orbax_like")
    library.info("library chatter")
    library.warning("library warning")
    for handler in root.handlers:
      handler.flush()
  finally:
    for handler in root.handlers:
      if handler not in handlers:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
      if handler not in root.handlers:
        root.addHandler(handler)
    root.setLevel(level)
    absl_logging.set_verbosity(verbosity)
  console = capsys.readouterr().err
  assert "step 3/10" in console and "WARNING: library warning" in console
  assert "library chatter" not in console
  with open(path) as f:
    logged = f.read()
  assert all(m in logged for m in ("step 3/10", "library chatter", "library warning"))


def test_command_line_run_prints_a_short_console(synthetic_data_dir, tmp_path):
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.pixel_classification",
       "--config=experiments/configs/pixel_classification.py:tiny", f"--workdir={workdir}",
       f"--config.data.data_dir={synthetic_data_dir}", "--config.num_train_steps=4",
       "--config.log_every_steps=2", "--config.evals.val.every_steps=4",
       "--config.checkpoint_every_steps=2", "--config.evals.val.num_examples=8",
       "--config.evals.test.num_examples=8"],
      capture_output=True, text=True, cwd=root, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  console = (result.stdout + result.stderr).splitlines()
  assert len(console) <= 40, "\n".join(console)
  assert any("step 4/4" in line for line in console)
  assert any("evaluation at step 4" in line for line in console)
  assert not any("orbax" in line.lower() for line in console)
  log = (workdir / "run.log").read_text()
  assert "step 4/4" in log and "orbax" in log.lower()  # Everything is in the file.
  assert not (workdir / "run.lock").exists()  # Released at the end.


def test_console_filter_keeps_own_messages_and_unexpected_warnings():
  def record(pathname, level, message):
    return logging.LogRecord("x", level, pathname, 1, message, None, None)

  console = run_logging._OwnMessagesAndWarnings()  # pylint: disable=protected-access
  own = os.path.join(os.path.dirname(run_logging.__file__), "loop.py")
  library = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
  assert console.filter(record(own, logging.INFO, "step 10/60"))
  file_only = record(own, logging.INFO, "Downloading and preparing dataset")
  file_only.console = False  # what logging.info(..., extra={"console": False}) sets
  assert not console.filter(file_only)
  assert not console.filter(record(library, logging.INFO, "saving"))
  assert console.filter(record(library, logging.WARNING, "disk almost full"))
  assert not console.filter(record(
      library, logging.WARNING, "Requested `tracked_metric`; did not provide metrics."))


def test_printed_build_banners_go_to_the_log_file_only(capsys, monkeypatch):
  from jhseg.data import sources
  logged = []
  monkeypatch.setattr(sources.logging, "info",
                      lambda msg, *args, **kwargs: logged.append((msg % args, kwargs)))
  with sources._stdout_to_log():  # pylint: disable=protected-access
    print("Downloading and preparing dataset x")
    print("")
  assert capsys.readouterr().out == ""
  assert logged == [("Downloading and preparing dataset x", {"extra": {"console": False}})]


def test_pass_progress_logs_at_most_once_per_interval(monkeypatch):
  lines = []
  monkeypatch.setattr(run_logging.logging, "info", lambda fmt, *args: lines.append(fmt % args))
  now = [0.0]
  progress = run_logging.PassProgress("eval/test step 3: bsds500 test", 200, every_seconds=60,
                                      clock=lambda: now[0])
  for t in (10.0, 50.0, 70.0, 100.0, 135.0):  # 4 examples per batch
    now[0] = t
    progress.advance(4)
  # Logged at 70 s (12 done, 12/70 per s, ETA 188/(12/70) = 1096 s) and at 135 s (65 s later).
  assert lines == ["eval/test step 3: bsds500 test: 12/200 examples  0.17/s  ETA 0:18:16",
                   "eval/test step 3: bsds500 test: 20/200 examples  0.15/s  ETA 0:20:15"]
