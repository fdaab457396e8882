"""`synthetic_scenes`: offline scenes with a true object/part hierarchy.

Importing this package registers the TFDS builder `synthetic_scenes` (configs
`default` and `tiny`). The label tree is in `label_tree`, the renderer in `render`.
"""
from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import SPLIT_SEEDS
from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import Builder
from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import SyntheticScenesConfig
from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import ensure_built

__all__ = ["SPLIT_SEEDS", "Builder", "SyntheticScenesConfig", "ensure_built"]
