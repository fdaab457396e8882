"""The single training engine shared by every method.

`train_and_evaluate` and `NonFiniteLossError` are loaded on first use (PEP 562), so
that `jhseg.train.cli` (the experiments' entry point) can read and check a config
before JAX, Flax and the data pipeline are imported: a wrong field fails at once.
"""
import importlib

__all__ = ["NonFiniteLossError", "train_and_evaluate"]


def __getattr__(name):
  if name in __all__:
    return getattr(importlib.import_module("jhseg.train.loop"), name)
  raise AttributeError(f"module 'jhseg.train' has no attribute {name!r}")
