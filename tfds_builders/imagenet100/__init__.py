"""TFDS builder `imagenet100`; importing this package registers it with TFDS."""
from tfds_builders.imagenet100.imagenet100_dataset_builder import Builder

__all__ = ["Builder"]
