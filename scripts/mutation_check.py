#!/usr/bin/env python3
"""Plant known one-line bugs, one at a time, and check that the fast tests named for each catch it.

  python scripts/mutation_check.py               # every mutant (about 5 minutes on 2 cores)
  python scripts/mutation_check.py --list        # the mutants and their tests
  python scripts/mutation_check.py grad_pmean nesterov   # only these

Each mutant is a realistic bug in a critical path (the SE block, the data-parallel step,
BatchNorm, the optimisers, the schedules, the input pipeline, sweep overrides): one line (one
statement) of one file replaced by another. The repository's files (tracked and untracked, not ignored) are copied
to a temporary directory once; for each mutant the line is changed there, the mutant's tests run
(`pytest -x`), and the line is put back. A mutant is CAUGHT when the tests fail, MISSED when they
pass, ERROR when pytest cannot even run them (the mutant does not import: fix the mutant). The
unchanged copy runs every named test first, so a failure is the mutant's doing. A mutant whose
line is no longer in its file is reported STALE: update this list with the code.
Exit status: 0 when every mutant is caught, 1 otherwise. Not part of CI (too slow); run it after
changing a critical path or its tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXACT = 'tests/test_exact_training.py'
AUGMENT = 'tests/test_exact_augment.py'


@dataclasses.dataclass(frozen=True)
class Mutant:
  name: str
  path: str
  old: str  # must occur exactly once in `path`
  new: str
  tests: tuple[str, ...]
  why: str


MUTANTS = [
    # The SE block.
    Mutant('se_gate', 'se_flax/models/se.py', "'sigmoid': jax.nn.sigmoid,", "'sigmoid': jax.nn.hard_sigmoid,",
           ('tests/test_se.py',), 'the default gate is not the sigmoid'),
    Mutant('se_scale', 'se_flax/models/se.py', 'return x * s[:, None, None, :].astype(x.dtype)',
           'return x + s[:, None, None, :].astype(x.dtype)', ('tests/test_se.py',), 'excitation added, not multiplied'),
    Mutant('se_no_relu', 'se_flax/models/se.py', '    s = nn.relu(s)\n', '    s = s\n',
           ('tests/test_se.py',), 'no ReLU between the two FCs'),
    Mutant('se_width', 'se_flax/models/se.py', 'return max(1, channels // reduction)',
           'return max(1, round(channels / reduction))', ('tests/test_se.py',), 'C / r rounded, not floored'),
    # The data-parallel step.
    Mutant('grad_pmean', 'se_flax/steps.py', 'grads = jax.lax.pmean(grads, AXIS)', 'grads = grads',
           (f'{EXACT}::test_replicas_agree_and_equal_one_device_on_the_global_batch',),
           'gradients not averaged over devices'),
    Mutant('grad_psum', 'se_flax/steps.py', 'grads = jax.lax.pmean(grads, AXIS)', 'grads = jax.lax.psum(grads, AXIS)',
           (f'{EXACT}::test_replicas_agree_and_equal_one_device_on_the_global_batch',),
           'gradients summed over devices (lr effectively x4)'),
    Mutant('bn_stats_pmean', 'se_flax/steps.py', 'batch_stats = jax.lax.pmean(batch_stats, AXIS)',
           'batch_stats = batch_stats',
           (f'{EXACT}::test_unsynchronised_batch_norm_is_per_device_and_averaged',),
           'unsynchronised BatchNorm statistics not averaged: replicas drift apart'),
    Mutant('sync_bn_ignored', 'se_flax/models/factory.py', 'axis_name=axis_name if model_cfg.sync_batch_norm else None',
           'axis_name=axis_name', (f'{EXACT}::test_unsynchronised_batch_norm_is_per_device_and_averaged',),
           'sync_batch_norm=False still synchronises'),
    Mutant('sync_bn_off', 'se_flax/models/factory.py', 'axis_name=axis_name if model_cfg.sync_batch_norm else None',
           'axis_name=None', (f'{EXACT}::test_replicas_agree_and_equal_one_device_on_the_global_batch',),
           'BatchNorm never synchronised'),
    Mutant('dropout_same_on_devices', 'se_flax/steps.py',
           'step_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))',
           'step_rng = jax.random.fold_in(state.rng, state.step)',
           (f'{EXACT}::test_dropout_masks_differ_between_devices_and_steps',),
           'the same dropout key on every device'),
    Mutant('dropout_same_every_step', 'se_flax/steps.py',
           'step_rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS))',
           'step_rng = jax.random.fold_in(state.rng, jax.lax.axis_index(AXIS))',
           (f'{EXACT}::test_dropout_masks_differ_between_devices_and_steps',),
           'the same dropout key every step'),
    # BatchNorm.
    Mutant('bn_momentum', 'se_flax/models/resnet.py', 'bn_momentum: float = 0.9', 'bn_momentum: float = 0.99',
           (f'{EXACT}::test_batch_norm_running_statistics',), 'BatchNorm momentum 0.99 (PyTorch 0.01)'),
    Mutant('bn_vjp_no_centring', 'se_flax/models/batch_norm.py',
           'dx = (scale * inv) * (dy - dy_mean - xhat * dy_xhat_mean)',
           'dx = (scale * inv) * (dy - xhat * dy_xhat_mean)', ('tests/test_batch_norm.py',),
           "closed-form BatchNorm gradient without the mean of the output's cotangent"),
    Mutant('bn_vjp_unsynced', 'se_flax/models/batch_norm.py', 'dy_mean, dy_xhat_mean = _means((dy, dy * xhat), axes, axis_name)',
           'dy_mean, dy_xhat_mean = _means((dy, dy * xhat), axes, None)',
           ('tests/test_batch_norm.py::test_synchronised_statistics_match_flax_autodiff_on_4_devices',),
           "synchronised BatchNorm's backward means taken on each device alone"),
    Mutant('attn_norm_not_passed', 'se_flax/models/inception_parts.py',
           'param_dtype=self.param_dtype, norm=self._norm(train))', 'param_dtype=self.param_dtype)',
           ('tests/test_attention.py::test_batch_norm_in_the_slot_is_the_networks',),
           "the Inceptions' attention slot ignores frozen statistics and axis_name"),
    # The stem max-pool's custom gradient.
    Mutant('pool_last_maximum', 'se_flax/models/layers.py', 'better = v > best', 'better = v >= best',
           ('tests/test_fast_paths.py',), "the pool's gradient goes to the last maximum of a window"),
    # Optimisers.
    Mutant('nesterov_plain', 'se_flax/optim.py', "nesterov=opt.name == 'nesterov'", 'nesterov=False',
           (f'{EXACT}::test_optimizer_matches_its_formula',), "'nesterov' runs plain momentum"),
    Mutant('no_momentum', 'se_flax/optim.py', "if opt.momentum\n", "if False\n",
           (f'{EXACT}::test_optimizer_matches_its_formula',), 'momentum dropped'),
    Mutant('decay_mask', 'se_flax/optim.py', "{k: (k[-1] == 'kernel' or not kernels_only)",
           "{k: (k[-1] != 'bias' or not kernels_only)",
           (f'{EXACT}::test_optimizer_matches_its_formula',), 'BatchNorm scales decayed'),
    Mutant('adam_betas', 'se_flax/optim.py', 'b1=opt.b1, b2=opt.b2', 'b1=opt.b1, b2=opt.b1',
           (f'{EXACT}::test_optimizer_matches_its_formula',), 'AdamW b2 taken from b1'),
    # Schedules.
    Mutant('step_boundaries_late', 'se_flax/optim.py',
           'boundaries = {b - warmup: sched.decay_factor',
           'boundaries = {b: sched.decay_factor',
           (f'{EXACT}::test_schedule_around_every_boundary_with_warmup',
            f'{EXACT}::test_step_schedule_of_he_et_al_recipe'),
           'step decays late by the warm-up length'),
    Mutant('cosine_too_long', 'se_flax/optim.py', 'optax.cosine_decay_schedule(peak, max(1, total_steps - warmup))',
           'optax.cosine_decay_schedule(peak, max(1, total_steps))',
           (f'{EXACT}::test_schedule_around_every_boundary_with_warmup',), 'cosine does not reach 0 at the end'),
    Mutant('warmup_from_zero', 'se_flax/optim.py', 'optax.linear_schedule(start, peak, warmup)',
           'optax.linear_schedule(0.0, peak, warmup)',
           (f'{EXACT}::test_schedule_around_every_boundary_with_warmup',), 'warmup_lr_factor ignored'),
    # The input pipeline.
    Mutant('eval_flipped', 'se_flax/data/input_pipeline.py',
           '  return lambda data: _centre_view(decode(data), data_cfg.eval_resize, data_cfg.image_size, method,\n'
           '                                   antialias)\n',
           '  return lambda data: (tf.image.flip_left_right if data_cfg.random_flip else tf.identity)('
           '_centre_view(decode(data), data_cfg.eval_resize, data_cfg.image_size, method, antialias))\n',
           (f'{AUGMENT}::test_eval_is_the_centre_view_even_with_random_flip',),
           'evaluation images mirrored when random_flip is on'),
    Mutant('seeds_repeat_each_epoch', 'se_flax/data/input_pipeline.py',
           'seeds = np.stack([np.full(index.shape, _key(seed, epoch)), position], axis=-1)',
           'seeds = np.stack([np.full(index.shape, _key(seed, 0)), position], axis=-1)',
           (f'{AUGMENT}::test_cifar_crop_flip_ranges_and_epochs',), 'augmentation seeds repeat every epoch'),
    Mutant('stream_seeds_repeat', 'se_flax/data/input_pipeline.py', 'key = _key(seed, epoch, process_index)',
           'key = _key(seed, first_epoch, process_index)',
           (f'{AUGMENT}::test_stream_augmentation_changes_between_epochs_and_eval_is_fixed',),
           'streaming epochs repeat order and augmentation'),
    Mutant('rrc_default_area', 'se_flax/data/input_pipeline.py', 'area_range=tuple(data_cfg.rrc_scale),',
           'area_range=(0.08, 1.0),', (f'{AUGMENT}::test_inception_crops_stay_in_the_configured_area_and_ratio',),
           'rrc_scale ignored'),
    Mutant('rrc_ratio_inverted', 'se_flax/data/input_pipeline.py', 'aspect_ratio_range=tuple(data_cfg.rrc_ratio),',
           'aspect_ratio_range=tuple(1 / r for r in data_cfg.rrc_ratio[::-1]),',
           (f'{AUGMENT}::test_inception_crops_stay_in_the_configured_area_and_ratio',),
           'ratio read as height / width'),
    Mutant('cifar_pad_one_side', 'se_flax/data/input_pipeline.py',
           'image = tf.image.pad_to_bounding_box(view(data), pad, pad, size + 2 * pad, size + 2 * pad)',
           'image = tf.image.pad_to_bounding_box(view(data), 0, 0, size + 2 * pad, size + 2 * pad)',
           (f'{AUGMENT}::test_cifar_crop_flip_ranges_and_epochs',), 'padding on the bottom and right only'),
    Mutant('flip_always', 'se_flax/data/input_pipeline.py',
           'return tf.image.stateless_random_flip_left_right(image, flip_seed)',
           'return tf.image.flip_left_right(image)',
           (f'{AUGMENT}::test_cifar_crop_flip_ranges_and_epochs',), 'every training image mirrored'),
    # Sweep overrides.
    Mutant('tuple_elements_str', 'se_flax/hyper.py', "', '.join(repr(x) for x in v)", "', '.join(str(x) for x in v)",
           ('tests/test_sweep_overrides.py',), "tuple elements spelled without quotes: (fc/kernel,)"),
    Mutant('none_passed_on', 'se_flax/hyper.py', '    if v is None:\n', '    if False:\n',
           ('tests/test_sweep_overrides.py',), "None passed to train.py as the text 'None'"),
]


def copy_tree(dst: str) -> None:
  files = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout.split('\0')
  for rel in filter(None, files):
    src = os.path.join(REPO, rel)
    if os.path.isfile(src):
      os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
      shutil.copy2(src, os.path.join(dst, rel))


def run_tests(tree: str, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
  cmd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *tests]
  try:
    proc = subprocess.run(cmd, cwd=tree, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return -1, 'timed out'
  return proc.returncode, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
  """'test id: first error line' from pytest's output."""
  failed = re.findall(r'^(?:FAILED|ERROR) (\S+)', output, re.M)
  errors = [l[1:].strip() for l in output.splitlines() if l.startswith('E ') and l[1:].strip()]
  return f'{failed[0] if failed else "?"}: {" | ".join(errors[:3])[:240] if errors else "?"}'


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('names', nargs='*', help='mutants to run (default: all)')
  parser.add_argument('--list', action='store_true', help='list the mutants and exit')
  parser.add_argument('--timeout', type=float, default=900, help='seconds per pytest run')
  args = parser.parse_args()
  unknown = sorted(set(args.names) - {m.name for m in MUTANTS})
  if unknown:
    parser.error(f'unknown mutant(s) {", ".join(unknown)}; --list shows them')
  mutants = [m for m in MUTANTS if not args.names or m.name in args.names]
  if args.list:
    for m in mutants:
      print(f'{m.name:26s} {m.path}: {m.why}\n{"":26s} tests: {" ".join(m.tests)}')
    return 0

  with tempfile.TemporaryDirectory(prefix='se_flax_mutants_') as tree:
    copy_tree(tree)
    all_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
    start = time.time()
    code, output = run_tests(tree, all_tests, args.timeout)
    if code != 0:
      print(f'the unchanged code fails its tests ({first_failure(output)}); fix that first', file=sys.stderr)
      return 1
    print(f'unchanged code: {len(all_tests)} test selections pass ({time.time() - start:.0f} s)', flush=True)
    missed = 0
    for m in mutants:
      path = os.path.join(tree, m.path)
      with open(path) as f:
        original = f.read()
      if original.count(m.old) != 1:
        print(f'STALE   {m.name}: the line to change occurs {original.count(m.old)} times in {m.path}')
        missed += 1
        continue
      with open(path, 'w') as f:
        f.write(original.replace(m.old, m.new))
      start = time.time()
      try:
        code, output = run_tests(tree, m.tests, args.timeout)
      finally:
        with open(path, 'w') as f:
          f.write(original)
      caught = code == 1  # pytest: 1 = tests failed; 2-5 = collection or usage errors, not a catch
      missed += not caught
      verdict = 'CAUGHT' if caught else {0: 'MISSED', -1: 'TIMEOUT'}.get(code, f'ERROR {code}')
      detail = first_failure(output) if caught else ', '.join(m.tests)
      print(f'{verdict:7s} {m.name} ({m.why}; {time.time() - start:.0f} s)\n'
            f'        {m.path}: {m.old.strip()!r} -> {m.new.strip()!r}\n        {detail}', flush=True)
  print(f'{len(mutants) - missed}/{len(mutants)} caught')
  return 0 if missed == 0 else 1


if __name__ == '__main__':
  sys.exit(main())
