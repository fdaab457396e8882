"""TFDS builder of the synthetic hierarchical scenes (the built-in default data).

No download: scenes are rendered by `render.render_scene`, deterministically
from (split seed, example index). Build with

    tfds build tfds_builders/synthetic_scenes --data_dir=DIR --file_format=array_record

or let a run build it on first use (`jhseg.data.sources`).

Features (H = W = `image_size`):
  image         uint8 (H, W, 3), PNG-encoded
  instances     int32 (H, W), object instance ids 1..K, 0 = background
  parts         int32 (H, W), part instance ids 1..P, 0 = background
  object_class  int32 (H, W), index into `label_tree.OBJECT_CLASSES`
  part_class    int32 (H, W), index into `label_tree.PART_CLASSES`
                (object_class == PART_TO_OBJECT[part_class] everywhere)
  label         class of the largest visible object (ClassLabel over OBJECT_CLASSES)
  ucm           float32 (2H-1, 2W-1), interpixel ultrametric target: 0 inside parts,
                0.5 on part boundaries inside an object, 1 on object boundaries
                (including object/background).
Label maps are zlib-compressed Tensor features: exact int32 values, no PNG
bit-depth limit. Regions are label sets; a part split by an occluder is two
regions of the UCM's partitions (the UCM is defined by its edges).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.synthetic_scenes import label_tree, render

_SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}


@dataclasses.dataclass
class SyntheticScenesConfig(tfds.core.BuilderConfig):
  image_size: int = 64
  num_train: int = 512
  num_validation: int = 128
  num_test: int = 128
  max_objects: int = 4


def ultrametric_target(parts: np.ndarray, instances: np.ndarray) -> np.ndarray:
  """The interpixel (2H-1, 2W-1) UCM with parts at 0.5 and objects at 1."""
  from jhseg import grid  # Deferred: JAX only when examples are generated.

  h, v = grid.nested_labels_to_ultrametric([parts, instances], [0.5, 1.0])
  return np.asarray(grid.edges_to_interpixel(h, v), np.float32)


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic scenes of objects made of parts, with their two-level hierarchy."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      SyntheticScenesConfig(name="default", description="64x64, 512/128/128 scenes, <=4 objects"),
      SyntheticScenesConfig(name="tiny", description="32x32, 64/16/16 scenes, <=3 objects",
                            image_size=32, num_train=64, num_validation=16, num_test=16,
                            max_objects=3),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.image_size
    label_map = lambda doc: tfds.features.Tensor(shape=(s, s), dtype=np.int32, encoding="zlib",
                                                 doc=doc)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(s, s, 3)),
            "instances": label_map("object instance ids, 0 = background"),
            "parts": label_map("part instance ids, 0 = background"),
            "object_class": label_map("object class per pixel (OBJECT_CLASSES)"),
            "part_class": label_map("part class per pixel (PART_CLASSES)"),
            "label": tfds.features.ClassLabel(names=label_tree.OBJECT_CLASSES),
            "ucm": tfds.features.Tensor(shape=(2 * s - 1, 2 * s - 1), dtype=np.float32,
                                        encoding="zlib", doc="interpixel ultrametric target"),
        }),
        metadata=tfds.core.MetadataDict(
            object_classes=list(label_tree.OBJECT_CLASSES),
            part_classes=list(label_tree.PART_CLASSES),
            part_to_object=label_tree.PART_TO_OBJECT.tolist()),
        homepage="https://github.com/jhseg/jhseg",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    c = self.builder_config
    sizes = {"train": c.num_train, "validation": c.num_validation, "test": c.num_test}
    return {split: self._generate_examples(split, n) for split, n in sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    c = self.builder_config
    for index in range(num_examples):
      scene = render.render_scene(index, image_size=c.image_size, max_objects=c.max_objects,
                                  seed=_SPLIT_SEEDS[split])
      yield index, {
          "image": scene.image,
          "instances": scene.instances,
          "parts": scene.parts,
          "object_class": scene.object_class,
          "part_class": scene.part_class,
          "label": scene.label,
          "ucm": ultrametric_target(scene.parts, scene.instances),
      }
