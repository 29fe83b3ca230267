"""Training and evaluation end to end: real steps, exact resume, exact padded eval, TensorBoard, CLI."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from tensorboard.backend.event_processing import event_accumulator

from configs import digits as digits_config
from configs import cifar10 as cifar10_config
from configs import imagenet as imagenet_config
from se_flax import models, optim, train_lib
from se_flax.data import digits
from se_flax.data import input_pipeline
import tfds_mocks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_digits(data_dir: str, **train):
  """The quickstart config shrunk to a tiny model and a few steps."""
  config = digits_config.get_config('seresnet_tiny_cifar')
  config.data.data_dir = data_dir
  config.train.global_batch_size = 32
  config.eval.global_batch_size = 64
  config.train.update(train)
  return config


def final_state(workdir: str) -> dict:
  """The latest checkpoint's state tree as numpy, read back with orbax alone."""
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  step = max(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  return ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), 'state'))


def assert_same_state(a: dict, b: dict) -> None:
  """Bitwise equality of two state trees, naming the first leaf that differs."""
  flat_a, flat_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)
  assert len(flat_a) == len(flat_b)
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))


def scalars(workdir: str, tag: str) -> dict[int, float]:
  """A scalar series, read back with TensorBoard's own event reader."""
  (path,) = glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  import tensorflow as tf
  return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


def test_digits_loss_falls_and_is_logged(digits_dir, tmp_path):
  config = tiny_digits(digits_dir, num_steps=60, log_every_steps=10, checkpoint_every_steps=30)
  config.data.augment = 'none'
  config.schedule.warmup_epochs = 0.0
  config.optim.lr = 0.2
  result = train_lib.train_and_evaluate(config, str(tmp_path))
  loss = scalars(str(tmp_path), 'train/loss')
  assert sorted(loss) == [10, 20, 30, 40, 50, 60]
  assert loss[60] < 0.75 * loss[10], loss
  assert set(scalars(str(tmp_path), 'eval/top1')) == {60}
  assert scalars(str(tmp_path), 'train/img_per_sec')[60] > 0
  assert result['num_examples'] == 360 and result['step'] == 60
  assert result['top1'] > 0.5  # ten classes: chance is 0.1
  assert json.load(open(tmp_path / 'final_eval.json')) == result
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['30', '60']


def test_resume_is_bitwise_equal(digits_dir, tmp_path):
  """k steps, stop, resume to N == N steps uninterrupted (step schedule: lr independent of N)."""
  def config(num_steps):
    c = tiny_digits(digits_dir, num_steps=num_steps, checkpoint_every_steps=4, log_every_steps=4,
                    eval_every_epochs=0.0)
    c.schedule.name = 'step'
    c.schedule.decay_epochs = (0.2,)  # the lr drops at step 9: resume must cross it exactly
    c.model.drop_rate = 0.3  # dropout keys must follow the step too
    return c

  train_lib.train_and_evaluate(config(12), str(tmp_path / 'straight'))
  train_lib.train_and_evaluate(config(4), str(tmp_path / 'resumed'))
  train_lib.train_and_evaluate(config(12), str(tmp_path / 'resumed'))
  a, b = final_state(str(tmp_path / 'straight')), final_state(str(tmp_path / 'resumed'))
  assert int(a['step']) == int(b['step']) == 12
  assert_same_state(a, b)


def _mock_config(dataset: str):
  """configs/cifar10.py or configs/imagenet.py with a tiny model, small images and 2 steps."""
  if dataset == 'cifar10':
    config = cifar10_config.get_config('seresnet_tiny_cifar')
  else:
    config = imagenet_config.get_config('seresnet_tiny')
    config.data.image_size, config.data.eval_resize = 32, 36
  config.train.update(global_batch_size=8, num_steps=2, log_every_steps=1, checkpoint_every_steps=2)
  config.eval.global_batch_size = 8
  return config


@pytest.mark.parametrize('num_devices', [1, 4])
@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet2012'])
def test_configs_train_inside_the_standard_tfds_mock(dataset, num_devices, tmp_path):
  """As the flax imagenet example's tests: `tfds.testing.mock_data(num_examples=8)`, default policy."""
  config = _mock_config(dataset)
  config.num_devices = num_devices
  with tfds.testing.mock_data(num_examples=8):
    result = train_lib.train_and_evaluate(config, str(tmp_path / 'work'))
  assert result['step'] == 2 and result['num_examples'] == 8
  assert np.isfinite(result['loss'])
  assert all(np.isfinite(v) for v in scalars(str(tmp_path / 'work'), 'train/loss').values())


@pytest.mark.parametrize('dataset', ['cifar10', 'imagenet2012'])
def test_outside_a_mock_a_missing_dataset_is_one_line(dataset, tmp_path):
  config = _mock_config(dataset)
  config.data.data_dir = str(tmp_path / 'tfds')
  with pytest.raises(input_pipeline.DataNotFoundError) as info:
    train_lib.train_and_evaluate(config, str(tmp_path / 'work'))
  assert '\n' not in str(info.value) and f'tfds build {dataset} --data_dir={tmp_path / "tfds"}' in str(info.value)
  assert not (tmp_path / 'work').exists() and not (tmp_path / 'tfds').exists()


def test_eval_is_exact_for_any_batch_and_device_count(digits_dir):
  """Padded, masked eval equals a direct computation over the whole split."""
  config = tiny_digits(digits_dir)
  exp = train_lib.build_experiment(config)
  variables = {'params': exp.state.params, 'batch_stats': exp.state.batch_stats}
  # Perturb the freshly initialised BN so predictions are not all one class.
  variables = jax.tree_util.tree_map(lambda x: x + 0.1 * jnp.cos(jnp.arange(x.size).reshape(x.shape)),
                                     variables)

  builder = digits.ensure_prepared(digits_dir)
  import tensorflow_datasets as tfds
  data = tfds.as_numpy(builder.as_dataset(split='test', batch_size=-1, shuffle_files=False))
  spec = input_pipeline.get_spec('digits')
  images = (data['image'].astype(np.float32) - np.float32(spec.mean)) / np.float32(spec.std)
  model = models.from_config(config.model, spec.num_classes)
  logits = np.asarray(model.apply(jax.device_get(variables), images, train=False))
  labels = data['label']
  expected_top1 = float(np.mean(np.argmax(logits, -1) == labels))
  top5 = np.argsort(-logits, axis=-1)[:, :5]
  expected_top5 = float(np.mean(np.any(top5 == labels[:, None], axis=-1)))
  logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  expected_loss = float(-np.mean(logp[np.arange(len(labels)), labels]))
  assert 0.0 < expected_top1 < 1.0

  for num_devices, batch in [(1, 7), (1, 360), (4, 4), (4, 100), (4, 512)]:
    config.num_devices = num_devices
    mesh = train_lib.create_mesh(config)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    got = train_lib.evaluate(train_lib.make_eval_step(exp.model, spec.num_classes, mesh),
                             jax.device_put(jax.device_get(variables), replicated), data_config=config.data,
                             split='test', global_batch_size=batch, mesh=mesh)
    assert got['num_examples'] == 360, (num_devices, batch)
    assert got['top1'] == pytest.approx(expected_top1, abs=1e-9), (num_devices, batch)
    assert got['top5'] == pytest.approx(expected_top5, abs=1e-9), (num_devices, batch)
    assert got['loss'] == pytest.approx(expected_loss, rel=1e-5), (num_devices, batch)


def set_field(config, dotted: str, value, sep: str = '.') -> None:
  """config['a']['b'] = value for dotted='a.b', as the ConfigDict's own (type-checked) assignment."""
  *parents, leaf = dotted.split(sep)
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


BAD_VALUES = [  # (config field, bad value, what the one-line error must contain)
    ('model.name', 'seresnet5', "unknown model 'seresnet5'"),
    ('data.name', 'imagenet', "'imagenet'"),
    ('model.se.reduction', 0, 'reduction=0'),
    ('model.se.gate', 'softmax', "gate='softmax'"),
    ('model.se.placement', 'inside', "placement='inside'"),
    ('model.se.gate', 'tanh', "gate='tanh' with zero-initialised last BatchNorm"),  # see below
    ('optim.lr', -0.1, 'optim.lr=-0.1'),
    ('train.num_epochs', 0.0, 'train.num_epochs=0'),
    ('train.global_batch_size', 30, 'global_batch_size=30'),
    ('optim.name', 'lamb', "optim.name='lamb'"),
    ('model.dtype', 'float16', "model.dtype='float16'"),
    ('num_devices', 5, 'num_devices=5'),
]


@pytest.mark.parametrize('field, value, message', BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_config_values_are_rejected_in_one_line(digits_dir, field, value, message):
  """The checks train.py runs before touching the workdir (the CLI path is tested below)."""
  config = tiny_digits(digits_dir)
  set_field(config, field, value)
  with pytest.raises(ValueError) as e:
    train_lib.validate_config(config)
  assert message in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('zero_init', [True, False])
def test_tanh_gate_with_zero_initialised_branch_never_trains(zero_init):
  """Why validate_config refuses gate tanh/relu with zero_init_last_bn: the residual branch and
  its gate get exactly zero gradient at that start, so they stay 0 for ever."""
  model = models.create('seresnet_tiny_cifar', num_classes=10, se=dict(gate='tanh'),
                        zero_init_last_bn=zero_init)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  labels = jnp.arange(4)
  variables = model.init(jax.random.key(1), x)

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
    return optim.cross_entropy(logits, labels, 10).mean()

  grads = jax.grad(loss)(variables['params'])
  branch = [grads[k]['bn2']['scale'] for k in grads if k.startswith('layer')]
  gate = [grads[k]['se']['fc2']['kernel'] for k in grads if k.startswith('layer')]
  stuck = all(not jnp.any(g) for g in branch + gate)
  assert stuck == zero_init, [float(jnp.abs(g).max()) for g in branch]


def run_cli(args: list[str], **kw) -> subprocess.CompletedProcess:
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=4', 'TF_CPP_MIN_LOG_LEVEL': '2'}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600, **kw)


def test_cli_overrides_train_and_eval_reproduces(digits_dir, tmp_path):
  workdir = str(tmp_path / 'work')
  common = ['--config=configs/digits.py:seresnet_tiny_cifar', f'--workdir={workdir}',
            f'--config.data.data_dir={digits_dir}', '--config.train.global_batch_size=32']
  train = run_cli(['train.py', *common, '--config.train.num_steps=5', '--config.model.se.reduction=2'])
  assert train.returncode == 0, train.stderr[-3000:]
  trained = json.loads(train.stdout.strip().splitlines()[-1])
  assert trained['step'] == 5
  meta = json.load(open(os.path.join(workdir, 'checkpoints', '5', 'meta', 'metadata')))
  assert meta['config']['model']['se']['reduction'] == 2
  assert meta['config']['train']['num_steps'] == 5
  state = final_state(workdir)
  assert state['params']['layer1_0']['se']['fc1']['kernel'].shape == (8, 4)  # 8 channels / r=2

  evaluated = run_cli(['eval.py', *common, '--config.train.num_steps=5', '--config.model.se.reduction=2'])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  result = json.loads(evaluated.stdout.strip().splitlines()[-1])
  for key in ('top1', 'top5', 'loss', 'num_examples', 'step'):
    assert result[key] == pytest.approx(trained[key], rel=1e-6), key


def test_cli_bad_value_exits_nonzero_and_leaves_workdir_alone(digits_dir, tmp_path):
  workdir = tmp_path / 'never_created'
  proc = run_cli(['train.py', f'--workdir={workdir}', f'--config.data.data_dir={digits_dir}',
                  '--config.model.se.gate=softmax'])
  assert proc.returncode == 1
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and "gate='softmax'" in errors[0] and 'sigmoid' in errors[0], proc.stderr[-2000:]
  assert not workdir.exists()


def test_eval_of_timm_weights_on_mock_imagenet(tmp_path):
  """eval.py's timm path: a timm state dict (.safetensors) evaluated on a TFDS split."""
  import importlib.util
  import safetensors.numpy
  from se_flax import evaluation
  from se_flax.weights import convert
  golden = os.path.join(REPO, 'tests', 'golden')
  spec = importlib.util.spec_from_file_location('golden_weights', os.path.join(golden, 'weights.py'))
  weights = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(weights)
  keys = json.load(open(os.path.join(golden, 'keys', 'legacy_seresnet18.json')))
  path = str(tmp_path / 'legacy_seresnet18.safetensors')
  safetensors.numpy.save_file(weights.make_state_dict(keys), path)

  config = imagenet_config.get_config('legacy_seresnet18')
  config.data.update(data_dir=str(tmp_path / 'tfds'), image_size=64, eval_resize=72)
  config.eval.global_batch_size = 8
  with tfds_mocks.mock_tfds('imagenet2012', 12, config.data.data_dir):
    result = evaluation.evaluate_timm(config, 'legacy_seresnet18', path)
    batches = list(input_pipeline.eval_iterator(config.data, global_batch_size=12))
  assert result['num_examples'] == 12 and result['source'] == path

  module, variables = convert.from_timm_file('legacy_seresnet18', path)
  logits = np.asarray(module.apply(variables, batches[0]['image'], train=False))
  labels = batches[0]['label']
  assert result['top1'] == pytest.approx(np.mean(np.argmax(logits, -1) == labels), abs=1e-9)
  logp = jax.nn.log_softmax(jnp.asarray(logits))
  assert result['loss'] == pytest.approx(-float(np.mean(logp[np.arange(12), labels])), rel=1e-4)


def test_bfloat16_compute_keeps_float32_params(digits_dir, tmp_path):
  config = tiny_digits(digits_dir, num_steps=3, checkpoint_every_steps=3, log_every_steps=3)
  config.model.dtype = 'bfloat16'
  result = train_lib.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result['loss'])
  state = final_state(str(tmp_path))
  dtypes = {np.asarray(x).dtype for x in jax.tree_util.tree_leaves(state['params'])}
  assert dtypes == {np.dtype('float32')}
