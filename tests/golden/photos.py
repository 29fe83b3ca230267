"""Real photos for the preprocessing tests (numpy and PIL only, shared with make_preprocess_golden.py).

scikit-learn ships two JPEG photos, china.jpg and flower.jpg (640x427, baseline, 4:4:4). Other sizes
and aspects are PNG crops of their decoded pixels: lossless, so every PNG decoder returns exactly
those pixels, and the crops are the same wherever the test runs.
"""

from __future__ import annotations

import io
import os

from PIL import Image

PHOTOS = ('china', 'flower')
# name: (photo, PIL crop box (left, top, right, bottom)); sizes in the comments as width x height.
CROPS = {
    'china_portrait': ('china', (211, 0, 462, 427)),  # 251 x 427: portrait
    'china_wide': ('china', (37, 150, 554, 270)),  # 517 x 120: upscaled, long side 4.3x the short
    'flower_small': ('flower', (300, 140, 450, 237)),  # 150 x 97: upscaled
    'flower_odd': ('flower', (101, 63, 402, 396)),  # 301 x 333: odd sides, near square
}
NAMES = PHOTOS + tuple(CROPS)


def sklearn_images_dir() -> str:
  """scikit-learn's datasets/images folder (without importing scikit-learn)."""
  import importlib.util
  spec = importlib.util.find_spec('sklearn')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('scikit-learn is not installed: its datasets/images/*.jpg are the test photos')
  return os.path.join(list(spec.submodule_search_locations)[0], 'datasets', 'images')


def encoded(name: str, images_dir: str | None = None) -> bytes:
  """The bytes of photo or crop `name`: the JPEG file, or a PNG of the crop."""
  images_dir = images_dir or sklearn_images_dir()
  photo, box = (name, None) if name in PHOTOS else CROPS[name]
  with open(os.path.join(images_dir, f'{photo}.jpg'), 'rb') as f:
    data = f.read()
  if box is None:
    return data
  with Image.open(io.BytesIO(data)) as image:
    out = io.BytesIO()
    image.convert('RGB').crop(box).save(out, format='PNG')
  return out.getvalue()
