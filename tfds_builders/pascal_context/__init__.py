"""TFDS builder `pascal_context`; importing this package registers it with TFDS."""
from tfds_builders.pascal_context.pascal_context_dataset_builder import Builder

__all__ = ["Builder"]
