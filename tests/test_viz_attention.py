"""Attention maps painted on pixels: hand-built labels and attention, PNG written."""
import numpy as np
from matplotlib.image import imread
import pytest

from jhseg.viz import attention as viz_attention

# G0: 3 segments on a 2x4 image, one invalid pixel (-1).
G0 = np.array([[0, 0, 1, 1],
               [2, 2, 1, -1]])
# Level 1: 2 queries over the 3 G0 segments.
A1 = np.array([[0.5, 0.25, 0.25],
               [0.0, 0.0, 1.0]])
# G1 (the level-1 clusters as pixels): segments 0, 1 -> cluster 1, segment 2 -> cluster 0.
G1 = np.array([[1, 1, 1, 1],
               [0, 0, 1, -1]])
# Level 2: 1 query over the 2 level-1 clusters.
A2 = np.array([[0.75, 0.25]])


def test_paint_level_one_by_hand():
  maps = viz_attention.paint_attention(G0, A1)
  np.testing.assert_array_equal(maps, [
      [[0.5, 0.5, 0.25, 0.25], [0.25, 0.25, 0.25, 0.0]],
      [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]])


def test_paint_level_two_through_g1_by_hand():
  maps = viz_attention.paint_attention(G1, A2)
  np.testing.assert_array_equal(maps, [[[0.25, 0.25, 0.25, 0.25], [0.75, 0.75, 0.25, 0.0]]])


def test_paint_rejects_ids_beyond_attention():
  with pytest.raises(ValueError, match="id 2 but attention covers only 2"):
    viz_attention.paint_attention(G0, A2.repeat(2, axis=0))


def test_png_written_with_one_row_per_level(tmp_path):
  path = viz_attention.save_attention_png(tmp_path / "sub" / "attention_0.png", [G0, G1],
                                          [A1, A2], image=np.full((2, 4, 3), 0.5))
  picture = imread(path)
  assert picture.ndim == 3 and picture.shape[0] > 0 and picture.std() > 0
  figure = viz_attention.attention_figure([G0, G1], [A1, A2])
  # rows = 2 levels, columns = max 2 queries; the missing level-2 query panel is blank.
  assert len(figure.axes) == 4
  assert [len(ax.images) for ax in figure.axes] == [1, 1, 1, 0]
  np.testing.assert_array_equal(figure.axes[2].images[0].get_array(),
                                viz_attention.paint_attention(G1, A2)[0])


def test_png_path_and_shapes_checked(tmp_path):
  with pytest.raises(ValueError, match="must end in .png"):
    viz_attention.save_attention_png(tmp_path / "a.jpg", [G0], [A1])
  with pytest.raises(ValueError, match="one segment map per attention"):
    viz_attention.attention_figure([G0, G1], [A1])
  with pytest.raises(ValueError, match=r"segment_maps\[1\]"):
    viz_attention.attention_figure([G0, G0[:, :2]], [A1, A1])
