"""Reading option mappings (config sections) into the data modules' settings."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, TypeVar

Options = TypeVar("Options")


def checked_options(config: Mapping[str, Any] | None, valid: Iterable[str], *,
                    where: str) -> dict[str, Any]:
  """`config` as a dict; a key not in `valid` raises ValueError naming `where`.

  `where` is the config path of the section (e.g. 'config.data.augment'), so
  a typo reads: unknown field(s) config.data.augment.['max_rotaton']; valid ...
  """
  options = dict(config or {})
  valid = set(valid)
  unknown = set(options) - valid
  if unknown:
    raise ValueError(f"unknown field(s) {where}.{sorted(unknown)}; valid fields: {sorted(valid)}")
  return options


def field_names(cls) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(cls))


def options_from_config(cls: type[Options], config: Mapping[str, Any] | None, *,
                        where: str) -> Options:
  """The frozen options dataclass `cls` from a config section (absent fields: defaults).

  A list given for a field whose default is a tuple (JSON and command-line
  configs have no tuples) becomes a tuple, so the options stay hashable.
  """
  values = checked_options(config, field_names(cls), where=where)
  for field in dataclasses.fields(cls):
    if isinstance(field.default, tuple) and isinstance(values.get(field.name), list):
      values[field.name] = tuple(values[field.name])
  return cls(**values)
