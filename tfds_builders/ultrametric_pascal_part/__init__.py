"""TFDS builder `ultrametric_pascal_part`; importing this package registers it with TFDS."""
from tfds_builders.ultrametric_pascal_part.ultrametric_pascal_part_dataset_builder import Builder

__all__ = ["Builder"]
