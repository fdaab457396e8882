"""`jhseg.infer.read_image` on real files of every PIL mode it supports (issue 11.6).

Each file is written with PIL in its mode and read back; the expected [0, 1] RGB is computed
here from the written values (not through PIL's conversions, except the palette lookup).
"""
import numpy as np
import pytest
from PIL import Image

from jhseg.infer import read_image

GREY8 = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
GREY16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 7)


def _grey_rgb(values, scale):
  return np.repeat((values.astype(np.float64) / scale)[..., None], 3, axis=-1)


def _check(path, expected):
  rgb = read_image(str(path))
  assert rgb.dtype == np.float32 and rgb.shape == expected.shape
  np.testing.assert_allclose(rgb, expected, atol=1e-6)


def test_sixteen_bit_grey_png_is_scaled_by_65535(tmp_path):
  path = tmp_path / "grey16.png"
  Image.fromarray(GREY16).save(path)
  with Image.open(path) as image:
    assert image.mode == "I;16"  # a real 16-bit PNG (PIL's RGB conversion clips it at 255)
  _check(path, _grey_rgb(GREY16, 65535))
  assert 0.0 < read_image(str(path))[0, 1, 0] < 0.1  # 5007 / 65535: not saturated to 1


def test_thirty_two_bit_integer_tiff(tmp_path):
  path = tmp_path / "grey32.tif"
  Image.fromarray(GREY16.astype(np.int32), mode="I").save(path)
  with Image.open(path) as image:
    assert image.mode == "I"
  _check(path, _grey_rgb(GREY16, 65535))
  too_large = tmp_path / "large.tif"
  Image.fromarray(GREY16.astype(np.int32) * 100, mode="I").save(too_large)
  with pytest.raises(ValueError, match=f"image {too_large}: 32-bit integer .* expected 16-bit"):
    read_image(str(too_large))


def test_float_tiff_in_range_and_nan(tmp_path):
  path = tmp_path / "float.tif"
  values = GREY16.astype(np.float32) / 65535
  Image.fromarray(values, mode="F").save(path)
  _check(path, _grey_rgb(values, 1))
  values[1, 2] = np.nan
  bad = tmp_path / "nan.tif"
  Image.fromarray(values, mode="F").save(bad)
  with pytest.raises(ValueError, match=f"image {bad}: floating-point .* with NaN/inf"):
    read_image(str(bad))


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_eight_bit_and_binary_grey(tmp_path, mode):
  path = tmp_path / f"grey_{mode}.png"
  if mode == "1":
    bits = GREY8 > 100
    Image.fromarray(bits).save(path)
    expected = _grey_rgb(bits.astype(np.uint8), 1)
  else:
    Image.fromarray(GREY8, mode="L").convert(mode).save(path)
    expected = _grey_rgb(GREY8, 255)
  with Image.open(path) as image:
    assert image.mode == mode
  _check(path, expected)


def test_palette_rgba_and_cmyk(tmp_path):
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
  rgba = np.concatenate([rgb, rng.integers(0, 256, (3, 4, 1)).astype(np.uint8)], axis=-1)
  Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
  _check(tmp_path / "rgba.png", rgb / 255.0)  # alpha dropped, colours unchanged

  indices = rng.integers(0, 4, (3, 4)).astype(np.uint8)
  palette = np.array([[0, 0, 0], [255, 0, 0], [10, 200, 30], [90, 90, 250]], np.uint8)
  image = Image.fromarray(indices, mode="P")
  image.putpalette(palette.ravel().tolist())
  image.save(tmp_path / "palette.png")
  _check(tmp_path / "palette.png", palette[indices] / 255.0)

  cmy = rng.integers(0, 256, (3, 4, 3)).astype(np.uint8)
  cmyk = np.concatenate([cmy, np.zeros((3, 4, 1), np.uint8)], axis=-1)  # K = 0: RGB = 255 - CMY
  Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.tif")
  _check(tmp_path / "cmyk.tif", (255 - cmy.astype(np.float64)) / 255.0)


def test_unreadable_and_truncated_files_are_named(tmp_path):
  text = tmp_path / "text.jpg"
  text.write_text("not a JPEG")
  with pytest.raises(ValueError, match=f"^cannot read image {text}: "):
    read_image(str(text))
  jpeg = tmp_path / "cut.jpg"
  Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(jpeg)
  jpeg.write_bytes(jpeg.read_bytes()[:200])
  with pytest.raises(ValueError, match=f"cannot read image {jpeg}"):
    read_image(str(jpeg))
