"""TFDS builder `pascal_part_108`; importing this package registers it with TFDS.

The label tree (108 parts -> 21 objects) is in `classes`, the rasterisation in `labels`.
"""
from tfds_builders.pascal_part_108.pascal_part_108_dataset_builder import Builder

__all__ = ["Builder"]
