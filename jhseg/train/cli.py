"""Command-line entry shared by the thin mains in `experiments/`.

    python -m experiments.<method> --config=experiments/configs/<method>.py[:tiny] \
        --workdir=DIR [--config.num_train_steps=100 --config.checkpoint.async=False ...]

The config file defines `get_config(arg)`. `--config.<a>.<b>=value` sets any
field the config has, and any engine field (`jhseg.train.config_fields`) even
when the file leaves it out (e.g. `--config.distributed.coordinator_address`);
the value is parsed to the field's type. An unknown field at any depth, or a
value of the wrong type, stops the command with one line naming the field
and the valid ones, before JAX starts.

The console shows jhseg's progress lines, evaluation summaries and every
warning; the full log (orbax, TFDS, XLA ...) goes to `DIR/run.log`.
`--verbose` shows everything on the console too.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
from typing import Any, Callable

import ml_collections
from absl import app, flags

from jhseg.train import config_fields

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs; "
                               "a run resumes from the checkpoints found there.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Print every library's log on the console "
                             "(it is always written to WORKDIR/run.log).")
_OVERRIDE = re.compile(r"^--?config\.([^=]+)")


def make_main(default_config: str) -> Callable[[list[str]], None]:
  """A `main(argv)` for `absl.app.run`, with `--config` defaulting to `default_config`."""
  if "config" not in flags.FLAGS:
    flags.DEFINE_string("config", default_config, "Path to a config file, optionally followed "
                        "by `:variant` (e.g. `:tiny`).")
  # absl rejects unknown flags, so each `--config.<field>` on this command line is declared
  # (as raw text); `main` checks the field and parses the text to its type.
  names = override_names(sys.argv)
  for name in names:
    if f"config.{name}" not in flags.FLAGS:
      flags.DEFINE_string(f"config.{name}", None, f"override of config.{name}")

  def main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not _WORKDIR.value:
      raise app.UsageError("--workdir is required")
    try:
      config = build_config(flags.FLAGS.config,
                            [(n, flags.FLAGS[f"config.{n}"].value) for n in names])
      config_fields.check_fields(config)
    except (config_fields.ConfigFieldError, FileNotFoundError) as err:
      sys.exit(f"error: {err}")
    _run(config, _WORKDIR.value, verbose=_VERBOSE.value)

  return main


def _run(config: ml_collections.ConfigDict, workdir: str, *, verbose: bool) -> None:
  if not verbose:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Read when TensorFlow loads.
  from jhseg.train import devices, logging as run_logging, train_and_evaluate

  devices.maybe_initialize_distributed(config)  # Before the log file: it names the process.
  run_logging.route_logs(workdir, verbose=verbose)
  summary = train_and_evaluate(config, workdir)
  print({k: round(v, 5) for k, v in sorted(summary.items())})


def override_names(argv: list[str]) -> list[str]:
  """The `<field>` of every `--config.<field>[=value]` in `argv`, in order, once each."""
  argv = flags.FLAGS.read_flags_from_files(argv[1:], force_gnu=False)
  names = [m.group(1) for a in argv if (m := _OVERRIDE.match(a))]
  return list(dict.fromkeys(names))


def build_config(spec: str, overrides: list[tuple[str, str]]) -> ml_collections.ConfigDict:
  """The config of `path[:variant]`, with engine placeholders added and `overrides` applied."""
  config = load_config(spec)
  add_engine_placeholders(config)
  for name, text in overrides:
    set_field(config, name, text)
  config.lock()
  return config


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Calls `get_config(variant)` of the file in `spec` = `path[:variant]`."""
  path, _, variant = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--config={spec}: no config file at {path}")
  module_spec = importlib.util.spec_from_file_location("_jhseg_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(variant or None)


def add_engine_placeholders(config: ml_collections.ConfigDict) -> None:
  """Adds the engine fields of `ENGINE_PLACEHOLDERS` a config file leaves out (as None)."""
  with config.unlocked():
    for path, field_type in config_fields.ENGINE_PLACEHOLDERS.items():
      *sections, leaf = path.split(".")
      node = config
      for section in sections:
        if node.get(section) is None:
          node[section] = ml_collections.ConfigDict()
        node = node[section]
      if leaf not in node:
        node[leaf] = ml_collections.config_dict.placeholder(field_type)


def set_field(config: ml_collections.ConfigDict, name: str, text: str) -> None:
  """Sets `config.<name>` from command-line `text`; ConfigFieldError if `name` is unknown."""
  *sections, leaf = name.split(".")
  node, path = config, ""
  for section in sections:
    if section not in node:
      if config_fields.engine_fields(_join(path, section)) is None:
        raise config_fields.unknown_field_error(path, section, node)
      with node.unlocked():
        node[section] = ml_collections.ConfigDict()  # e.g. --config.plateau.metric=...
    child = node[section]
    path = _join(path, section)
    if child is None and config_fields.engine_fields(path) is not None:
      with node.unlocked():
        node[section] = child = ml_collections.ConfigDict()
    if not isinstance(child, ml_collections.ConfigDict):
      raise config_fields.ConfigFieldError(
          f"--config.{name}: config.{path} is a value ({child!r}), not a section")
    node = child
  if leaf in node:
    field_type = node.get_type(leaf)
  elif leaf in (config_fields.engine_fields(path) or ()):
    field_type = None  # An engine field this config leaves out: parsed as a literal.
  else:
    raise config_fields.unknown_field_error(path, leaf, node)
  if field_type is not None and issubclass(field_type, (ml_collections.ConfigDict, dict)):
    raise config_fields.ConfigFieldError(
        f"--config.{name}: config.{_join(path, leaf)} is a section; set its fields, one of: "
        f"{', '.join(config_fields.valid_fields(node[leaf], _join(path, leaf)))}")
  value = parse_value(text, field_type, name)
  with node.unlocked():
    node[leaf] = value


def parse_value(text: str | None, field_type: type | None, name: str) -> Any:
  """`text` as a `field_type` value ("None" is None); a literal when the type is unknown."""
  if text is None or text.strip() == "None":
    return None
  if field_type is bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
  elif field_type in (int, float, str):
    try:
      return field_type(text)
    except ValueError:
      pass
  elif field_type in (tuple, list):
    value = _literal(text)
    if isinstance(value, (tuple, list)):
      return field_type(value)
  else:
    return _literal(text)
  raise config_fields.ConfigFieldError(
      f"--config.{name}={text}: expected a value of type {field_type.__name__}")


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def _join(path: str, key: str) -> str:
  return f"{path}.{key}" if path else key


def config_path(name: str) -> str:
  """Absolute path of `experiments/configs/<name>.py`."""
  here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return os.path.join(here, "experiments", "configs", f"{name}.py")
