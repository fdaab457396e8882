"""Reading option mappings (config sections) into the data modules' settings."""
from __future__ import annotations

from typing import Any, Iterable, Mapping


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
