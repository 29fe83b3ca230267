"""Excitation analysis (paper Section 6.4, Figure 6): mean SE gate per channel, per class and overall.

  python -m se_flax.tools.excitations --config=configs/digits.py --workdir=DIR [--classes=0,3,6,9] \
      [--out=DIR/excitations] [--split=test] [--step=N] [--config.any.field=value ...]

Run it from the repository root: config files import `configs.*`.

Runs the trained model (the workdir's latest checkpoint, or --step) over every example of the
eval split, reads each SE block's gate (sown as `intermediates/gate`; the logits are unchanged),
and writes per block the mean gate of every channel over the examples of each class and over all
examples: excitations.npz (arrays per block), excitations.csv (block, class, channel, mean gate,
count) and excitations.png (one panel per SE block, as the paper's Figure 6). Give the same config
and overrides the run was trained with (a sweep member: its overrides, see its train.log).

Every attention kind with one gate per channel sows it the same way and works here (se, ese, eca,
srm, fca, gc with a 'scale' fusion, cbam's channel gate, ge with global extent); gc with
gc_fuse='add' and ge with a finite extent have no per-channel gate (docs/reference.md).
"""

from __future__ import annotations

import csv
import io
import os
import re

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from se_flax import cli

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (tests import this module)."""
  cli.define_config_flag(os.path.join(_REPO, 'configs', 'digits.py'),
                         'Configuration file the checkpoint was trained with (path[:arg]).')
  flags.DEFINE_string('workdir', None, 'Training workdir holding the checkpoints.')
  flags.DEFINE_string('classes', None, 'Comma-separated class indices to plot (default: four, spread out).')
  flags.DEFINE_string('out', None, 'Output directory (default: <workdir>/excitations).')
  flags.DEFINE_string('split', None, 'Split to run over (default: config.data.eval_split).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')


def capture(model, variables: dict, images: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Eval-mode logits and every SE block's gate {'layer1_0/se': (N, C)}; the logits equal a plain apply."""
  logits, state = model.apply(variables, images, train=False, mutable=['intermediates'])
  flat = jax.tree_util.tree_flatten_with_path(state.get('intermediates', {}))[0]
  gates = {}
  for path, value in flat:
    keys = [getattr(p, 'key', getattr(p, 'idx', None)) for p in path]
    if 'gate' in keys:
      gates['/'.join(str(k) for k in keys[:keys.index('gate')])] = value
  return logits, gates


def class_means(model, variables: dict, batches, num_classes: int) -> tuple[dict, np.ndarray]:
  """Per block: sum of gates per class (K, C) -> means; and the examples per class (K,)."""
  step = jax.jit(lambda v, x: capture(model, v, x))
  sums, counts = {}, np.zeros(num_classes, np.int64)
  for batch in batches:
    mask = np.asarray(batch['mask'], bool)
    labels = np.asarray(batch['label'])[mask]
    _, gates = step(variables, jnp.asarray(batch['image']))
    for name, g in gates.items():
      g = np.asarray(g, np.float64)[mask]
      acc = sums.setdefault(name, np.zeros((num_classes, g.shape[-1])))
      np.add.at(acc, labels, g)
    counts += np.bincount(labels, minlength=num_classes)
  means = {name: s / np.maximum(counts, 1)[:, None] for name, s in sums.items()}
  overall = {name: s.sum(0) / max(counts.sum(), 1) for name, s in sums.items()}
  return {'by_class': means, 'all': overall}, counts


def _block_order(name: str) -> tuple:
  """'layer2_10/se' sorts after 'layer2_9/se': runs of digits compare as numbers, the rest as text
  (never a number with a text: 'block8/se' and 'block8_0/se' of Inception-ResNet-v2 both sort)."""
  head = name.split('/')[0]
  return tuple((0, int(p), '') if p.isdigit() else (1, 0, p) for p in re.split(r'(\d+)', head) if p) + ((2, 0, name),)


def write_outputs(out_dir: str, means: dict, counts: np.ndarray, classes: list[int], title: str,
                  class_names: list[str] | None = None) -> dict[str, float]:
  """excitations.npz / .csv / .png in `out_dir` (a path or a gs:// URL); returns per block the class
  spread (mean over channels of the std of the class means), the number the paper's Figure 6 reads by eye."""
  from se_flax import checkpointing
  out = checkpointing.workdir_path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  blocks = sorted(means['all'], key=_block_order)
  names = class_names or [str(c) for c in range(len(counts))]
  arrays = {'blocks': np.array(blocks), 'counts': counts, 'class_names': np.array(names)}
  for i, b in enumerate(blocks):
    arrays[f'block{i}_by_class'] = means['by_class'][b].astype(np.float32)
    arrays[f'block{i}_all'] = means['all'][b].astype(np.float32)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, **arrays)
  (out / 'excitations.npz').write_bytes(buffer.getvalue())
  with io.StringIO(newline='') as f:
    w = csv.writer(f)
    w.writerow(['block', 'class', 'channel', 'mean_gate', 'examples'])
    for b in blocks:
      for ch, v in enumerate(means['all'][b]):
        w.writerow([b, 'all', ch, f'{v:.5f}', int(counts.sum())])
      for k in range(len(counts)):
        for ch, v in enumerate(means['by_class'][b][k]):
          w.writerow([b, names[k], ch, f'{v:.5f}', int(counts[k])])
    (out / 'excitations.csv').write_text(f.getvalue())
  present = counts > 0
  spread = {b: float(np.mean(np.std(means['by_class'][b][present], axis=0))) for b in blocks}
  (out / 'excitations.png').write_bytes(_plot(blocks, means, classes, names, spread, title))
  return spread


def _plot(blocks: list[str], means: dict, classes: list[int], names: list[str],
          spread: dict[str, float], title: str) -> bytes:
  """The PNG: one panel per SE block."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  cols = min(3, len(blocks))
  rows = -(-len(blocks) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows + 0.6), dpi=80, squeeze=False)
  for ax, b in zip(axes.flat, blocks):
    channels = np.arange(len(means['all'][b]))
    for i, k in enumerate(classes):
      ax.plot(channels, means['by_class'][b][k], lw=1.0, color=f'C{i}', label=f'class {names[k]}')
    ax.plot(channels, means['all'][b], lw=1.6, color='k', ls='--', label='all classes')
    ax.set_title(f'{b}  (class spread {spread[b]:.3f})', fontsize=9)
    ax.set_xlabel('channel index', fontsize=8)
    ax.set_ylabel('mean gate', fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(blocks):]:
    ax.axis('off')
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc='upper right', ncol=len(labels), fontsize=8)
  fig.suptitle(title, fontsize=10, x=0.01, ha='left')
  fig.tight_layout(rect=(0, 0, 1, 0.95))
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png')
  plt.close(fig)
  from PIL import Image  # a matplotlib dependency; 256 colours make the many-line figure 3-4x smaller
  png = io.BytesIO()
  Image.open(buffer).convert('RGB').quantize(colors=256).save(png, format='PNG', optimize=True)
  return png.getvalue()


def default_classes(num_classes: int, n: int = 4) -> list[int]:
  return sorted({int(round(x)) for x in np.linspace(0, num_classes - 1, min(n, num_classes))})


def parse_classes(text: str | None, num_classes: int) -> list[int]:
  if not text:
    return default_classes(num_classes)
  try:
    classes = [int(c) for c in text.split(',') if c.strip()]
  except ValueError:
    raise ValueError(f'--classes={text!r} must be comma-separated class indices') from None
  bad = [c for c in classes if not 0 <= c < num_classes]
  if bad or not classes:
    raise ValueError(f'--classes={text!r}: class indices must be in 0..{num_classes - 1}')
  return classes


def run(config, workdir: str, *, classes: str | None = None, out_dir: str | None = None,
        split: str | None = None, step: int | None = None) -> dict[str, float]:
  """Restore the checkpoint, average the gates over `split`, write the files; returns the spreads."""
  from se_flax import evaluation, models
  from se_flax.data import input_pipeline
  exp = evaluation.trained_experiment(config, workdir)
  num_classes = exp.spec.num_classes
  chosen = parse_classes(classes, num_classes)
  model = models.from_config(config.model, num_classes)  # no mesh axis: applied outside shard_map
  shapes = {'params': exp.state.params, 'batch_stats': exp.state.batch_stats}
  image = jax.ShapeDtypeStruct((1, config.data.image_size, config.data.image_size, exp.spec.image_shape[-1]),
                               jnp.float32)
  if not jax.eval_shape(lambda v, x: capture(model, v, x), shapes, image)[1]:  # before any restore or data
    se = {k: v for k, v in config.model.se.items() if v is not None}
    raise ValueError(f'model {config.model.name!r} with config.model.se={se} has no SE block or other '
                     'per-channel attention gate to analyse (gc with gc_fuse=add and ge with ge_extent > 0 '
                     'have none); give the config and overrides the run was trained with')
  state = evaluation.restore_checkpoint(config, workdir, exp, step=step)
  variables = jax.device_get({'params': state.params, 'batch_stats': state.batch_stats})
  split = split or config.data.eval_split
  batches = input_pipeline.eval_iterator(config.data, split=split,
                                         global_batch_size=config.eval.global_batch_size)
  means, counts = class_means(model, variables, batches, num_classes)
  kind = model.se.kind.upper() if model.se.kind != 'se' else 'SE'
  title = (f'{kind} gates of {config.model.name} (step {int(state.step)}) on {config.data.name}/{split}: '
           'mean per channel, by class and over all classes')
  return write_outputs(out_dir or os.path.join(workdir, 'excitations'), means, counts, chosen, title)


def main(argv):
  config = cli.program_config(argv)
  with cli.clean_errors():
    if not FLAGS.workdir:
      raise ValueError('--workdir=DIR (a trained run) is required')
    spread = run(config, FLAGS.workdir, classes=FLAGS.classes, out_dir=FLAGS.out, split=FLAGS.split,
                 step=FLAGS.step)
  out = FLAGS.out or os.path.join(FLAGS.workdir, 'excitations')
  print('class spread of the gates per SE block (mean over channels of the std across class means):')
  for block, s in spread.items():
    print(f'  {block:16s} {s:.4f}')
  print(f'wrote {out}/excitations.png, excitations.npz, excitations.csv')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
