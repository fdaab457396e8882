"""Tests for jhseg.viz: UCM images, segment colourings, LRF/FDF curves, UCM grids."""
import numpy as np
import pytest
from PIL import Image

from jhseg.metrics import ucm_evaluation
from jhseg.viz import curves, grids, segments, ucm

PARTS = np.repeat(np.array([[1, 1, 2, 2, 3, 3, 0, 0]]), 6, axis=0)
OBJECTS = np.where(PARTS > 0, 1, 0)


def _ultrametric(label_maps, altitudes):
  h = np.zeros((label_maps[0].shape[0], label_maps[0].shape[1] - 1))
  v = np.zeros((label_maps[0].shape[0] - 1, label_maps[0].shape[1]))
  for labels, altitude in zip(label_maps, altitudes):
    h = np.maximum(h, altitude * (labels[:, 1:] != labels[:, :-1]))
    v = np.maximum(v, altitude * (labels[1:] != labels[:-1]))
  return h, v


def _read_png(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def test_ucm_image_hand_computed_both_resolutions():
  h = np.array([[0.2], [0.6]])
  v = np.array([[0.4, 0.1]])
  np.testing.assert_allclose(ucm.ucm_image(h, v),
                             [[0, 0.2, 0], [0.4, 0.6, 0.1], [0, 0.6, 0]])
  # Image resolution (BSDS ucm2[2::2, 2::2]): each pixel shows its lower-right corner; the
  # last row and column show the ucm2 frame, which repeats the outermost interpixel values as
  # the official BSDS files do.
  np.testing.assert_allclose(ucm.ucm_image(h, v, resolution="image"), [[0.6, 0.1], [0.6, 0]])
  with pytest.raises(ValueError, match="valid: \\['image', 'interpixel'\\]"):
    ucm.ucm_image(h, v, resolution="pixels")


def test_save_ucm_png_dark_contours_on_white(tmp_path):
  h, v = _ultrametric([PARTS, OBJECTS], [0.5, 1.0])
  path = ucm.save_ucm_png(tmp_path / "sub" / "ucm.png", h, v)
  pixels = _read_png(path)
  assert pixels.shape == (11, 15, 3)
  assert (pixels[::2, ::2] == 255).all()  # pixel sites are white
  assert (pixels[0, 11] == 0).all()  # object boundary (h[0, 5]) is black
  assert 100 < pixels[0, 3, 0] < 155  # part boundary (h[0, 1], weight 0.5) is mid-grey
  with pytest.raises(ValueError, match="must end in .png"):
    ucm.save_ucm_png(tmp_path / "ucm.jpg", h, v)


def test_colour_segments_palette_and_mean_colour():
  rgb = segments.colour_segments(PARTS)
  colours = {tuple(rgb[0, c]) for c in (0, 2, 4, 6)}
  assert len(colours) == 4  # four segments, four colours
  np.testing.assert_array_equal(rgb[:, 0], rgb[:, 1])  # one segment, one colour
  image = np.random.default_rng(0).random(PARTS.shape + (3,))
  mean = segments.colour_segments(PARTS, image=image)
  np.testing.assert_allclose(mean[0, 2], image[PARTS == 2].mean(axis=0))
  with pytest.raises(ValueError, match="image must be"):
    segments.colour_segments(PARTS, image=image[:, :4])


def test_draw_contours_paints_pixel_after_each_edge():
  contour_h = np.zeros((6, 7), bool)
  contour_h[:, 1] = True
  out = segments.draw_contours(np.ones((6, 8, 3)), contour_h, np.zeros((5, 8), bool),
                               colour=(0, 0, 0))
  assert (out[:, 2] == 0).all() and (out[:, [0, 1, 3]] == 1).all()


def test_hierarchy_levels_figure_counts_regions(tmp_path):
  h, v = _ultrametric([PARTS, OBJECTS], [0.5, 1.0])
  image = np.random.default_rng(1).random(PARTS.shape + (3,))
  figure = segments.hierarchy_levels_figure(image, h, v, [0.25, 0.75],
                                            titles=["parts", "objects"])
  titles = [ax.get_title() for ax in figure.axes]
  assert titles == ["image", "parts (4 regions)", "objects (2 regions)"]
  path = segments.save_hierarchy_levels_png(tmp_path / "levels.png", image, h, v, [0.5])
  assert _read_png(path).ndim == 3
  with pytest.raises(ValueError, match="are not the edges"):
    segments.hierarchy_levels_figure(image, v, h, [0.5])


def test_lrf_fdf_figure_lines_follow_the_results(tmp_path):
  h, v = _ultrametric([PARTS, OBJECTS], [0.5, 1.0])
  accumulator = ucm_evaluation.UcmEvaluation(thresholds=[0.25, 0.5, 0.75])
  accumulator.add(h, v, h, v)
  result = accumulator.result()
  figure = curves.lrf_fdf_figure({"truth": result, "truth again": result},
                                 level_names={1.0: "objects", 0.5: "parts"})
  lines = figure.axes[0].get_lines()
  assert [line.get_label() for line in lines[:3]] == [
      "truth: LRF objects", "truth: LRF parts", "truth: FDF"]
  assert [line.get_linestyle() for line in lines[:3]] == ["-", "--", ":"]
  np.testing.assert_allclose(lines[0].get_ydata(), [1, 1, 1])  # objects always recovered
  np.testing.assert_allclose(lines[1].get_ydata(), [1, 1, 0])  # parts up to t = 0.5
  np.testing.assert_allclose(lines[2].get_ydata(), [0, 0, 0])
  assert not np.allclose(lines[0].get_color(), lines[3].get_color())  # a colour per method
  path = curves.save_lrf_fdf_png(tmp_path / "lrf.png", result)
  assert _read_png(path).shape == (400, 600, 3)
  with pytest.raises(ValueError, match="must be a UcmEvaluation.result"):
    curves.lrf_fdf_figure({"bad": {"lrf": []}})


def test_ucm_grid_figure(tmp_path):
  h, v = _ultrametric([PARTS, OBJECTS], [0.5, 1.0])
  image = np.random.default_rng(2).random(PARTS.shape + (3,))
  figure = grids.ucm_grid_figure([image, image], [(h, v)] * 2, [(h * 0.5, v)] * 2)
  assert len(figure.axes) == 6
  assert [ax.get_title() for ax in figure.axes[:3]] == list(grids.COLUMN_TITLES)
  # The target panel shows the image-resolution UCM: black where an object edge is.
  target_panel = figure.axes[1].get_images()[0].get_array()
  np.testing.assert_allclose(target_panel[..., 0], ucm.ucm_to_rgb(
      ucm.ucm_image(h, v, resolution="image"), vmax=1.0)[..., 0])
  path = grids.save_ucm_grid_png(tmp_path / "grid.png", [image], [(h, v)], [(h, v)])
  assert _read_png(path).ndim == 3
  with pytest.raises(ValueError, match="as many images"):
    grids.ucm_grid_figure([image], [], [])
  with pytest.raises(ValueError, match="targets\\[0\\] h has shape"):
    grids.ucm_grid_figure([image], [(v, h)], [(h, v)])


def test_per_class_figure_one_panel_per_class(tmp_path):
  h, v = _ultrametric([PARTS, OBJECTS], [0.5, 1.0])
  instances = np.zeros_like(PARTS)
  instances[:, :2] = 1
  instances[:, 2:6] = 2
  accumulator = ucm_evaluation.UcmEvaluation(thresholds=[0.25, 0.75], radius=1)
  accumulator.add(h, v, h, v, instances=instances, instance_classes={1: 15, 2: 8})
  figure = curves.per_class_figure(accumulator.result(), class_names={15: "person"},
                                   columns=4)
  titles = [ax.get_title() for ax in figure.axes]
  assert titles[:2] == ["8 (n=1)", "person (n=1)"]
  assert len(figure.axes) == 2  # columns shrink to the number of classes
  assert _read_png(curves.save_per_class_png(tmp_path / "classes.png",
                                             accumulator.result())).ndim == 3
  with pytest.raises(ValueError, match="no per-class curves"):
    curves.per_class_figure({"thresholds": [0.5], "levels": [1.0], "per_class": {}})
