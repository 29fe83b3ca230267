"""Fine-tuning: init_from another workdir or timm weights, init_skip, the mismatch error, head
replacement, frozen BatchNorm statistics, the backbone/head optimiser, and configs/finetune_digits.py."""

from __future__ import annotations

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from configs import finetune_digits
from se_flax import steps, train_lib, trees
from se_flax.weights import init_from
from test_train import final_state, scalars, set_field, tiny_digits

MODEL = 'seresnet_tiny_cifar'


@pytest.fixture(scope='module')
def base_workdir(digits_dir, tmp_path_factory) -> str:
  """A tiny 10-class digits run to start from."""
  workdir = str(tmp_path_factory.mktemp('base'))
  config = tiny_digits(digits_dir, num_steps=40, checkpoint_every_steps=40, log_every_steps=40,
                       eval_every_epochs=0.0)
  config.data.augment = 'none'
  config.optim.lr = 0.2
  train_lib.train_and_evaluate(config, workdir)
  return workdir


def finetune_config(digits_dir, base: str, **changes):
  config = finetune_digits.get_config(MODEL)
  config.init_from = base
  config.data.data_dir = digits_dir
  config.train.update(global_batch_size=32, num_steps=20, log_every_steps=5, checkpoint_every_steps=20,
                      eval_every_epochs=0.0)
  config.eval.global_batch_size = 64
  for key, value in changes.items():
    set_field(config, key, value, sep='__')
  return config


def test_finetune_config_loads_replaces_head_and_learns(digits_dir, base_workdir, tmp_path, caplog, monkeypatch):
  """5 of the 10 digits from a 10-class checkpoint: head replaced, everything else loaded, loss
  falls; resuming the run later does not load init_from again, nor need it to exist."""
  config = finetune_config(digits_dir, base_workdir, finetune__freeze_backbone_steps=5, optim__lr=0.8)
  with caplog.at_level(logging.INFO):
    result = train_lib.train_and_evaluate(config, str(tmp_path))
  log = '\n'.join(r.getMessage() for r in caplog.records)
  assert 'init_from se_flax checkpoint' in log and 'freshly initialised      2 arrays' in log, log[-3000:]
  head = [l for l in log.splitlines() if l.startswith('head replaced')]
  assert head == ['head replaced: fc has 10 outputs in the checkpoint and 5 in the model: freshly initialised']
  base, tuned = final_state(base_workdir), final_state(str(tmp_path))
  assert tuned['params']['fc']['kernel'].shape == (32, 5)
  # Frozen BN statistics: exactly the source's after 20 steps.
  for a, b in zip(jax.tree.leaves(base['batch_stats']), jax.tree.leaves(tuned['batch_stats'])):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(base['params']['layer3_0']['conv2']['kernel'], tuned['params']['layer3_0']['conv2']['kernel'])
  loss = scalars(str(tmp_path), 'train/loss')
  assert loss[20] < 0.9 * loss[5] and loss[5] > loss[10] > loss[15] > loss[20], loss
  assert result['num_examples'] == 181  # the 0-4 digits of the test split
  assert result['top1'] > 0.4, result  # five classes: chance is 0.2

  calls = []
  monkeypatch.setattr(init_from, 'initialise', lambda *a, **k: calls.append(a))
  config.train.num_steps = 22
  config.init_from = str(tmp_path / 'moved_away')  # the source is gone: a resume must not care
  assert train_lib.train_and_evaluate(config, str(tmp_path))['step'] == 22 and calls == []
  with pytest.raises(ValueError, match='moved_away'):  # a fresh run does need it
    train_lib.build_experiment(config, str(tmp_path / 'fresh'))


def _fresh(digits_dir, base_workdir, **changes):
  config = finetune_config(digits_dir, base_workdir, **changes)
  return config, train_lib.build_experiment(config).state


def test_init_skip_keeps_fresh_values(digits_dir, base_workdir):
  config, fresh = _fresh(digits_dir, base_workdir, init_skip=('*/se/*', 'stem_bn1/*'))
  state, report = init_from.initialise(config, fresh)
  base = final_state(base_workdir)
  assert all('/se/' in k or 'stem_bn1' in k for k in report['skipped'])
  assert 'params/layer2_0/se/fc1/kernel' in report['skipped'] and 'batch_stats/stem_bn1/mean' in report['skipped']
  np.testing.assert_array_equal(state.params['layer2_0']['se']['fc1']['kernel'],
                                fresh.params['layer2_0']['se']['fc1']['kernel'])
  np.testing.assert_array_equal(state.params['layer2_0']['conv1']['kernel'], base['params']['layer2_0']['conv1']['kernel'])
  assert not np.array_equal(state.params['layer2_0']['conv1']['kernel'], fresh.params['layer2_0']['conv1']['kernel'])
  assert report['unused'] == []  # the source's fc and SE arrays are all accounted for


def test_shape_mismatch_outside_skip_is_an_error_listing_keys(digits_dir, base_workdir):
  config = finetune_config(digits_dir, base_workdir, model__se__reduction=2)  # other SE widths
  with pytest.raises(init_from.InitFromMismatchError) as info:
    train_lib.build_experiment(config)  # validated on shapes alone, before any workdir is touched
  message = str(info.value)
  assert f'init_from={base_workdir!r}: 9 shape mismatches outside config.init_skip' in message
  assert 'layer1_0/se/fc1/kernel (8, 2) vs (8, 4)' in message and '\n' not in message
  # The load checks again (a source validate could not see, e.g. one downloaded at start).
  config.init_from = ''
  fresh = train_lib.build_experiment(config).state
  config.init_from = base_workdir
  with pytest.raises(init_from.InitFromMismatchError, match='9 shape mismatches outside config.init_skip'):
    init_from.initialise(config, fresh)
  config.init_skip = ('*/se/*',)
  train_lib.validate_config(config)
  _, report = init_from.initialise(config, fresh)
  assert len(report['skipped']) == 12 and report['loaded']


def test_merge_is_explicit():
  target = {'params/a/kernel': np.zeros((2, 3)), 'params/fc/kernel': np.zeros((3, 5)), 'params/new/bias': np.zeros(2)}
  source = {'params/a/kernel': np.ones((2, 3)), 'params/fc/kernel': np.ones((3, 10)), 'params/old/bias': np.ones(4)}
  merged, report = init_from.merge(target, source)
  assert report['loaded'] == ['params/a/kernel'] and report['unused'] == ['params/old/bias']
  assert report['initialised'] == ['params/fc/kernel', 'params/new/bias'] and report['head'] == ['params/fc/kernel']
  assert merged['params/a/kernel'].sum() == 6 and merged['params/fc/kernel'].sum() == 0
  with pytest.raises(init_from.InitFromMismatchError, match='shares no variable'):
    init_from.merge(target, {'params/z/kernel': np.ones(1)})


def test_init_from_timm_weights_file(tmp_path):
  """A timm .safetensors for the configured model, through the converter (num_classes 1000 -> 10)."""
  import importlib.util
  import pathlib
  golden = pathlib.Path(__file__).resolve().parent / 'golden'
  spec = importlib.util.spec_from_file_location('golden_weights', golden / 'weights.py')
  weights = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(weights)
  path = str(tmp_path / 'model.safetensors')
  safetensors.numpy.save_file(weights.make_state_dict(json.loads((golden / 'keys' / 'legacy_seresnet18.json').read_text())),
                              path)
  source, description = init_from.load_source(path, 'legacy_seresnet18')
  assert description == f'timm legacy_seresnet18 weights {path}'
  # What validate checks before the workdir is touched: the same keys and shapes, from the header only.
  shapes = init_from.source_shapes(path, 'legacy_seresnet18')
  assert {k: v.shape for k, v in shapes.items()} == {k: v.shape for k, v in source.items()}
  np.testing.assert_array_equal(source['params/layer1_0/conv1/kernel'],
                                safetensors.numpy.load_file(path)['layer1.0.conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(source['batch_stats/layer4_1/bn2/var'],
                                safetensors.numpy.load_file(path)['layer4.1.bn2.running_var'])
  # Into a 10-class model of one-channel images: head replaced, the RGB stem skipped.
  target = dict(source, **{'params/fc/kernel': np.zeros((512, 10)), 'params/fc/bias': np.zeros(10),
                           'params/stem_conv1/kernel': np.zeros((7, 7, 1, 64))})
  _, report = init_from.merge(target, source, skip=('stem_conv1/*',))
  assert sorted(report['head']) == ['params/fc/bias', 'params/fc/kernel']
  assert report['skipped'] == ['params/stem_conv1/kernel'] and len(report['loaded']) == len(source) - 3


BAD = [  # (field, value, message)
    ('init_from', 'seresnet50.rb2_in1k', "init_from='seresnet50.rb2_in1k': unknown pretrained tag"),
    ('init_from', '/nowhere/run', "init_from='/nowhere/run': no such workdir or file"),
    ('init_skip', ('fx/*',), "init_skip glob 'fx/*' matches no variable of seresnet_tiny_cifar"),
    ('init_skip', ('',), 'must be a tuple of non-empty glob strings'),
    ('finetune.backbone_lr_multiplier', -1.0, 'finetune.backbone_lr_multiplier=-1.0 must be >= 0'),
    ('finetune.freeze_backbone_steps', -2, 'finetune.freeze_backbone_steps=-2 must be an integer >= 0'),
    ('data.keep_labels', (1, 1), 'data.keep_labels=(1, 1) must be distinct class ids in [0, 10)'),
    # The load's shape check, from the source checkpoint's metadata, before the workdir is touched.
    ('model.se.reduction', 2, 'shape mismatches outside config.init_skip (checkpoint vs model): '
     'layer1_0/se/fc1/bias (2,) vs (4,)'),
    ('init_from', 'hf-hub:someone/my-finetune', "model.name='seresnet_tiny_cifar', which has no timm converter"),
]


@pytest.mark.parametrize('field, value, message', BAD, ids=[f'{b[0]}={b[1]}' for b in BAD])
def test_bad_finetune_fields_are_one_line_errors(digits_dir, base_workdir, field, value, message):
  config = finetune_config(digits_dir, base_workdir)
  set_field(config, field, value)
  with pytest.raises(ValueError) as info:
    train_lib.validate_config(config)
  assert message in str(info.value) and '\n' not in str(info.value), str(info.value)
  named = f'{field}=' in str(info.value) or f'{field} glob' in str(info.value)
  assert named or field == 'model.se.reduction'  # that one names init_from, whose load it breaks


def test_validate_finds_a_missing_converted_tag_and_reads_hub_ids_as_model_name(tmp_path, monkeypatch):
  """A PyTorch-only tag not yet converted is an error before training; a hub id of a repo outside
  the tag table holds config.model.name's weights (not an error, checked when downloaded)."""
  monkeypatch.setenv('SE_FLAX_PRETRAINED_DIR', str(tmp_path))
  with pytest.raises(ValueError, match=r"init_from='legacy_seresnet50.in1k': .*only as a PyTorch file"):
    init_from._validate_source('legacy_seresnet50.in1k', 'seresnet_tiny_cifar')
  init_from._validate_source('hf-hub:someone/my-finetune', 'seresnet50')
  assert init_from._name_for('hf-hub:someone/my-finetune', 'seresnet50') == 'seresnet50'
  assert init_from._name_for('hf-hub:timm/seresnet50.ra2_in1k', 'resnet50') is None  # the tag's own model


@pytest.mark.parametrize('num_devices, dtype', [(1, 'float32'), (2, 'bfloat16')])
def test_init_from_another_device_count_and_dtype(digits_dir, base_workdir, num_devices, dtype):
  """The base ran on 4 devices in float32; params and batch_stats load exactly, on this mesh."""
  config, fresh = _fresh(digits_dir, base_workdir, num_devices=num_devices, model__dtype=dtype)
  state, report = init_from.initialise(config, fresh)
  base = final_state(base_workdir)
  base = trees.flatten({'params': base['params'], 'batch_stats': base['batch_stats']})
  assert len(report['loaded']) == len(base) - 2 and len(report['head']) == 2  # all but fc's kernel and bias
  loaded = trees.flatten({'params': state.params, 'batch_stats': state.batch_stats})
  for key in report['loaded']:
    assert loaded[key].dtype == np.float32 and len(loaded[key].sharding.device_set) == num_devices
    np.testing.assert_array_equal(np.asarray(loaded[key]), base[key], err_msg=key)
  assert any(k.startswith('batch_stats/') for k in report['loaded'])


def test_frozen_bn_train_step_uses_running_statistics(digits_dir):
  """One step with model.freeze_bn_stats: batch_stats unchanged, logits as in eval mode."""
  config = tiny_digits(digits_dir)
  config.model.freeze_bn_stats = True
  config.schedule.warmup_epochs = 0.0  # a non-zero lr at step 0
  config.num_devices = 1
  exp = train_lib.build_experiment(config)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(32, 8, 8, 1)).astype(np.float32),
           'label': rng.integers(0, 10, 32).astype(np.int32)}
  # Non-trivial running statistics, so that eval mode and batch statistics differ.
  stats = jax.tree.map(lambda x: x + 0.3, exp.state.batch_stats)
  state = exp.state.replace(batch_stats=stats)
  before = jax.device_get(state.batch_stats)
  params = jax.device_get(state.params)

  eval_logits = exp.model.apply({'params': params, 'batch_stats': before}, batch['image'], train=False)
  sharding = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec(steps.AXIS))
  train_step = steps.make_train_step(exp.model, config, 10, exp.mesh, exp.lr_fn)
  new_state, metrics = train_step(state, steps.to_global(batch, sharding))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(new_state.batch_stats))):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(params['stem_conv1']['kernel'], np.asarray(new_state.params['stem_conv1']['kernel']))
  # The loss it reports is the eval-mode loss of the old parameters (dropout is 0 in this model).
  expected = float(np.mean(jax.nn.logsumexp(eval_logits, -1) - eval_logits[np.arange(32), batch['label']]))
  assert float(metrics['loss']) == pytest.approx(expected, rel=1e-5)



def test_backbone_lr_multiplier_and_freeze():
  """Head at lr, backbone at lr * 0.1 and not at all (no momentum, no decay) in the first 3 steps."""
  import optax
  from configs import default
  from se_flax import optim
  params = {'conv': {'kernel': jnp.ones((2, 2))}, 'fc': {'kernel': jnp.ones((2, 3))}}
  grads = jax.tree.map(jnp.ones_like, params)

  def run(multiplier, frozen, n=5):
    config = default.get_config()
    config.optim.name, config.optim.weight_decay = 'sgd', 0.0
    config.finetune.update(backbone_lr_multiplier=multiplier, freeze_backbone_steps=frozen)
    tx = optim.create_optimizer(config, optax.constant_schedule(0.5))
    state, p, trace = tx.init(params), params, []
    for _ in range(n):
      updates, state = tx.update(grads, state, p)
      p = optax.apply_updates(p, updates)
      trace.append((float(p['conv']['kernel'][0, 0]), float(p['fc']['kernel'][0, 0])))
    return trace

  plain = run(1.0, 0)
  scaled = run(0.1, 3)
  assert run(0.1, 3) != run(0.1, 0)
  assert [h for _, h in scaled] == [h for _, h in plain]  # the head as without fine-tuning options
  assert [b for b, _ in scaled[:3]] == [1.0, 1.0, 1.0]
  # Step 4 is the backbone's first update: lr 0.05, momentum starting from zero.
  assert scaled[3][0] == pytest.approx(1.0 - 0.1 * (1.0 - plain[0][0]))
  assert run(0.0, 0)[-1][0] == 1.0


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_backbone_optimizer_keeps_weight_decay_mask_and_the_global_schedule(name):
  """Kernels decay in both groups, biases in neither; the backbone's lr follows the global step
  (its first update after 2 frozen steps uses lr(2), not lr(0)); 'params/fc/*' names the head too."""
  import optax
  from configs import default
  from se_flax import optim
  params = {'conv': {'kernel': jnp.full((1,), 2.0), 'bias': jnp.full((1,), 2.0)},
            'fc': {'kernel': jnp.full((1,), 2.0), 'bias': jnp.full((1,), 2.0)}}
  grads = jax.tree.map(jnp.zeros_like, params)  # only weight decay moves anything
  config = default.get_config()
  config.optim.update(name=name, weight_decay=0.5, momentum=0.0)
  config.finetune.update(backbone_lr_multiplier=0.5, freeze_backbone_steps=2, head=('params/fc/*',))
  lr = lambda count: 0.1 * (count + 1)
  tx = optim.create_optimizer(config, lr)
  state, p = tx.init(params), params
  expected = {'conv': 2.0, 'fc': 2.0}
  for step in range(4):
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
    # sgd: p -= lr * wd * p (coupled); adamw with zero grads: p -= lr * wd * p (decoupled) as well.
    expected['fc'] -= lr(step) * 0.5 * expected['fc']
    if step >= 2:
      expected['conv'] -= 0.5 * lr(step) * 0.5 * expected['conv']
    for module in ('conv', 'fc'):
      assert float(p[module]['kernel'][0]) == pytest.approx(expected[module], rel=1e-6), (step, module)
      assert float(p[module]['bias'][0]) == 2.0


@pytest.mark.parametrize('source, image_size, expected', [
    ('resnet50.tv2_in1k', None, {'image_size': 176, 'eval_resize': 201}),  # bilinear as the default
    ('resnet50.tv2_in1k', 192, {'eval_resize': 219}),  # the config's own size: floor(192 / 0.875)
    ('hf-hub:timm/seresnet50.ra2_in1k', None, {'eval_interpolation': 'bicubic'}),  # 224 / 0.875 as the default
    ('resnet34.ra4_e3600_r224_in1k', None, {'eval_resize': 248, 'eval_interpolation': 'bicubic',
                                            'mean': (127.5,) * 3, 'std': (127.5,) * 3}),
])
def test_a_tag_brings_its_preprocessing_where_the_config_keeps_the_defaults(source, image_size, expected):
  """timm's fine-tuning data config (train resolution and crop_pct, interpolation, mean/std, PIL eval)
  for each field left at the dataset's default."""
  from configs import imagenet
  from se_flax.data import input_pipeline
  config = imagenet.get_config('resnet50')
  config.init_from = source
  if image_size:
    config.data.image_size = image_size
  fields = init_from.tag_data_fields(config, input_pipeline.default_data_config('imagenet2012'))
  assert fields == {**expected, 'eval_antialias': True, 'eval_backend': 'pil'}
  config.data.update(eval_backend='tensorflow', eval_antialias=False)  # the defaults, so still replaced
  assert init_from.tag_data_fields(config, input_pipeline.default_data_config('imagenet2012')) == fields
  config.data.eval_interpolation = 'bicubic'  # not the dataset's default: the config's own, kept
  assert 'eval_interpolation' not in init_from.tag_data_fields(
      config, input_pipeline.default_data_config('imagenet2012'))


def test_no_tag_no_preprocessing_change(base_workdir, tmp_path):
  from configs import imagenet
  from se_flax.data import input_pipeline
  defaults = input_pipeline.default_data_config('imagenet2012')
  config = imagenet.get_config('resnet50')
  for source in ('', base_workdir, str(tmp_path / 'model.safetensors'), 'hf-hub:someone/my-finetune',
                 'seresnet50.nope'):
    config.init_from = source
    assert init_from.tag_data_fields(config, defaults) == {}, source


def test_a_run_from_a_tag_trains_and_evaluates_with_its_preprocessing(tmp_path):
  """build_experiment (training and eval.py of its workdir) applies the tag's fields before validation."""
  import tensorflow_datasets as tfds
  from configs import imagenet
  config = imagenet.get_config('seresnet_tiny')
  config.init_from = 'resnet50.tv2_in1k'  # never loaded here: only its preprocessing is read
  config.train.global_batch_size = config.eval.global_batch_size = 8
  with tfds.testing.mock_data(num_examples=8):
    exp = train_lib.build_experiment(config)
  assert (config.data.image_size, config.data.eval_resize, config.data.eval_backend) == (176, 201, 'pil')
  assert exp.state.params['stem_conv1']['kernel'].shape[-1] > 0
