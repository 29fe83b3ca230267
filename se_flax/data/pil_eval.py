"""timm's evaluation transform, done as timm does it: PIL decode, PIL resize, centre crop.

A pretrained tag's reference accuracy was measured on what timm's eval transform gives
(`timm.data.create_transform(**resolve_data_config(..., use_test_size=True))`): the image PIL
decodes (`Image.open(f).convert('RGB')`), torchvision's `Resize(floor(size / crop_pct))` of the
short side with PIL's filter (antialiased), `CenterCrop(size)`, then `/ 255` and mean/std.
TensorFlow's JPEG decoder (default DCT) and `tf.image.resize` differ from PIL by up to 0.26 in
normalised units, so `input_pipeline` evaluates with these functions when `data.eval_backend` is
'pil', and `se_flax.weights.pretrained.preprocess` is the same path for one image. numpy and PIL only.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

FILTERS = {'bilinear': Image.Resampling.BILINEAR, 'bicubic': Image.Resampling.BICUBIC}
_MODES = {1: 'L', 3: 'RGB'}


def decode(data: bytes | np.ndarray, channels: int = 3) -> Image.Image:
  """Encoded bytes (any format PIL reads) or a uint8 [H, W, C] array -> a PIL image of `channels`."""
  if channels not in _MODES:
    raise ValueError(f'channels={channels} must be 1 or 3')
  if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 3:
    return Image.fromarray(data[..., 0] if data.shape[-1] == 1 else data, _MODES[data.shape[-1]]).convert(
        _MODES[channels])
  image = Image.open(io.BytesIO(bytes(data)))
  image.load()  # decodes (without the GIL); convert('RGB') of an RGB image would only copy it
  return image if image.mode == _MODES[channels] else image.convert(_MODES[channels])


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """torchvision's `Resize(short_side)` output (h, w): the long side is `int(short_side * long / short)`."""
  short, long = (width, height) if width <= height else (height, width)
  new_long = int(short_side * long / short)
  return (new_long, short_side) if width <= height else (short_side, new_long)


def centre_view(image: Image.Image, short_side: int, size: int, interpolation: str = 'bilinear') -> np.ndarray:
  """torchvision `Resize(short_side)` (PIL filter `interpolation`; no resize when the shape already fits)
  then `CenterCrop(size)` (offsets `int(round((side - size) / 2))`): uint8 [size, size, C]."""
  if interpolation not in FILTERS:
    raise ValueError(f'interpolation {interpolation!r} is not one of {", ".join(FILTERS)}')
  if short_side < size:
    raise ValueError(f'resize {short_side} must be >= crop size {size}')
  height, width = resized_shape(image.height, image.width, short_side)
  if (height, width) != (image.height, image.width):
    image = image.resize((width, height), FILTERS[interpolation])
  top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
  pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def view(data: bytes | np.ndarray, short_side: int, size: int, interpolation: str, channels: int) -> np.ndarray:
  """decode + centre_view: uint8 [size, size, channels] (what `input_pipeline` maps over examples)."""
  return centre_view(decode(data, channels), short_side, size, interpolation)


def normalise(pixels: np.ndarray, mean, std) -> np.ndarray:
  """(x - mean) / std in float32, mean/std in 0..255 units: bit for bit `input_pipeline`'s
  normalisation (one float32 subtraction and one division per value)."""
  return (pixels.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
