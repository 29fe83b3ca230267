"""How far a checkout's pretrained eval input is from timm's: pixels and the logits of a converted network.

    python tests/golden/measure_eval_input.py [--repo=CHECKOUT] [--backend=pil|tensorflow]

Needs torch + timm and se_flax's requirements in one environment (torch is imported before
TensorFlow). For tags of several eval transforms and the photos of photos.py (the crops re-encoded as
4:2:0 JPEGs of quality 90, as most ImageNet files are): the max and mean absolute difference, in
normalised units, between timm's eval transform and the checkout's (--backend=pil:
`se_flax.pretrained.preprocess`; tensorflow: `input_pipeline`'s TensorFlow eval transform with the
tag's `data_fields`, what `eval.py --pretrained` used before the PIL path). Then, for two tags, the
relative L2 change of the logits of a random-init timm network converted with `se_flax.convert`,
fed the checkout's input instead of timm's.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
TAGS = ('legacy_seresnet50.in1k', 'seresnet50.ra2_in1k', 'resnet50.a1_in1k', 'resnet34.ra4_e3600_r224_in1k',
        'resnet50.tv2_in1k', 'resnet50.a3_in1k')
LOGIT_TAGS = ('legacy_seresnet50.in1k', 'seresnet50.ra2_in1k')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--repo', default=str(HERE.parent.parent), help='the se_flax checkout to measure')
  parser.add_argument('--backend', default='pil', choices=('pil', 'tensorflow'))
  args = parser.parse_args()
  sys.path[:0] = [args.repo, str(HERE)]
  import numpy as np
  from PIL import Image
  import torch
  import timm
  import timm.data
  import tensorflow as tf
  import jax
  from se_flax import convert, pretrained
  from se_flax.data import input_pipeline as ip
  import photos

  def jpeg(name: str) -> bytes:
    data = photos.encoded(name)
    if name in photos.PHOTOS:
      return data
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).convert('RGB').save(out, format='JPEG', quality=90)
    return out.getvalue()

  def ours(tag: str, data: bytes) -> np.ndarray:
    if args.backend == 'pil':
      return pretrained.preprocess(tag, data)
    cfg = ip.default_data_config('imagenet2012')
    fields = pretrained.data_fields(pretrained.eval_preprocessing(tag))
    cfg.update({k: v for k, v in fields.items() if k != 'eval_backend'})
    return ip._normalise(cfg, ip._eval_transform(cfg, True, 3)(tf.constant(data))).numpy()

  def timms(tag: str, data: bytes) -> np.ndarray:
    cfg = timm.data.resolve_data_config({}, model=timm.create_model(tag, pretrained=False), use_test_size=True)
    image = Image.open(io.BytesIO(data)).convert('RGB')
    return timm.data.create_transform(**cfg)(image).permute(1, 2, 0).numpy()

  worst, means = 0.0, []
  for tag in TAGS:
    diffs = [np.abs(ours(tag, jpeg(n)) - timms(tag, jpeg(n))) for n in photos.NAMES]
    worst = max(worst, max(float(d.max()) for d in diffs))
    means.append(float(np.mean([d.mean() for d in diffs])))
    print(f'{tag}: max {max(float(d.max()) for d in diffs):.3g}, mean {means[-1]:.3g}', flush=True)
  print(f'all: max {worst:.3g}, mean {np.mean(means):.3g} (normalised units)')

  for tag in LOGIT_TAGS:
    torch.manual_seed(0)
    model = timm.create_model(tag, pretrained=False).eval()
    module, variables = convert.from_timm(tag.split('.')[0], {k: v.numpy() for k, v in model.state_dict().items()})
    apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
    x_ours = np.stack([ours(tag, jpeg(n)) for n in photos.NAMES])
    x_timm = np.stack([timms(tag, jpeg(n)) for n in photos.NAMES])
    a, b = np.asarray(apply(variables, x_ours)), np.asarray(apply(variables, x_timm))
    rel = [float(np.linalg.norm(a[i] - b[i]) / np.linalg.norm(b[i])) for i in range(len(a))]
    print(f'{tag}: logits relative L2 per photo max {max(rel):.3g}, mean {np.mean(rel):.3g}')


if __name__ == '__main__':
  main()
