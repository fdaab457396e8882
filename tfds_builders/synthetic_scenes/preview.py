"""PNG preview of synthetic scenes: image | parts | objects | UCM target, one row per scene.

    python -m tfds_builders.synthetic_scenes.preview --out=scenes.png [--image_size=64] [--num=8]

Renders directly (no build needed) from the train stream; needs only NumPy and Pillow.
"""
import argparse
from typing import Sequence

import numpy as np
from PIL import Image

from tfds_builders.synthetic_scenes import render


def label_colours(labels: np.ndarray) -> np.ndarray:
  """uint8 (H, W, 3): label 0 black, label k a well-spread hue (golden-ratio steps)."""
  hue = (labels * 0.618033988749895) % 1.0
  channels = [np.clip(np.abs((hue * 6 + shift) % 6 - 3) - 1, 0, 1) for shift in (0, 4, 2)]
  rgb = 0.25 + 0.75 * np.stack(channels, axis=-1)
  return np.where(labels[..., None] > 0, rgb * 255, 0).astype(np.uint8)


def scene_row(scene: render.Scene, ucm: np.ndarray) -> np.ndarray:
  """One row at twice the image resolution; the (2H-1, 2W-1) UCM is padded by one."""
  twice = lambda a: np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)
  grey = np.round(np.pad(ucm, ((0, 1), (0, 1))) * 255).astype(np.uint8)
  panels = [twice(scene.image), twice(label_colours(scene.parts)),
            twice(label_colours(scene.instances)), np.repeat(grey[..., None], 3, axis=-1)]
  gap = np.full((panels[0].shape[0], 2, 3), 255, np.uint8)
  return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def sample_grid(scenes: Sequence[render.Scene], ucms: Sequence[np.ndarray]) -> np.ndarray:
  """uint8 picture stacking `scene_row` of each scene."""
  rows = [scene_row(s, u) for s, u in zip(scenes, ucms, strict=True)]
  gap = np.full((2, rows[0].shape[1], 3), 255, np.uint8)
  return np.concatenate([p for row in rows for p in (row, gap)][:-1], axis=0)


def main(argv: Sequence[str] | None = None) -> None:
  from tfds_builders.synthetic_scenes.synthetic_scenes_dataset_builder import ultrametric_target

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="PNG file to write")
  parser.add_argument("--image_size", type=int, default=64)
  parser.add_argument("--max_objects", type=int, default=4)
  parser.add_argument("--num", type=int, default=8)
  args = parser.parse_args(argv)
  scenes = [render.render_scene(i, image_size=args.image_size, max_objects=args.max_objects)
            for i in range(args.num)]
  ucms = [ultrametric_target(s.parts, s.instances) for s in scenes]
  Image.fromarray(sample_grid(scenes, ucms)).save(args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
