"""TFDS builder `ade20k`; importing this package registers it with TFDS.

The 150 classes and the annotation mapping are in `classes` (no hierarchy: see there).
"""
from tfds_builders.ade20k.ade20k_dataset_builder import Builder

__all__ = ["Builder"]
