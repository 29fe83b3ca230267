"""se_flax.weights.pretrained: every form of pretrained=, hub fetching (offline, a fake in place of the
network), loading equal to the converter, head replacement, and a tag's preprocessing, which equals
timm's eval transform (live where torch and timm are installed, else timm's committed references)."""

from __future__ import annotations

import importlib.util
import json
import logging
import pathlib

import functools
import sys

import huggingface_hub
from huggingface_hub import constants as hub_constants
from huggingface_hub import errors as hub_errors
import jax
import numpy as np
import pytest
import safetensors.numpy

import se_flax
from se_flax import models
from se_flax.weights import convert, pretrained

GOLDEN = pathlib.Path(__file__).resolve().parent / 'golden'
_spec = importlib.util.spec_from_file_location('golden_weights', GOLDEN / 'weights.py')
weights = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(weights)
sys.path.insert(0, str(GOLDEN))
import photos  # noqa: E402  (tests/golden/photos.py: the real photos the references were made from)

TIMM_EVAL = json.loads((GOLDEN / 'preprocess' / 'timm_eval.json').read_text())

NAME = 'legacy_seresnet18'  # smallest golden key list
HUB_TAG = 'seresnet50.ra2_in1k'
IMAGES = weights.make_inputs(size=32).transpose(0, 2, 3, 1)


@functools.partial(jax.jit, static_argnums=0)
def _logits(module, variables):
  return module.apply(variables, IMAGES, train=False)


@pytest.fixture(scope='module')
def weights_file(tmp_path_factory) -> str:
  """A timm-layout .safetensors written from a seeded synthetic state dict."""
  keys = json.loads((GOLDEN / 'keys' / f'{NAME}.json').read_text())
  path = str(tmp_path_factory.mktemp('weights') / 'model.safetensors')
  safetensors.numpy.save_file(weights.make_state_dict(keys, seed=3), path)
  return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
  """huggingface_hub with an empty cache in tmp_path, no network (HF_HUB_OFFLINE), and a local
  se_flax pretrained dir; yields the cache dir."""
  cache = str(tmp_path / 'hf_cache')
  monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', cache)
  monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
  monkeypatch.setenv(pretrained.LOCAL_DIR_ENV, str(tmp_path / 'se_flax_pretrained'))
  return cache


def test_table_covers_the_reference_names():
  assert len(pretrained.TAGS) == 98
  assert set(pretrained.DEFAULT_TAGS) <= set(convert.TIMM_NAMES)
  assert all(pretrained.TAGS[t].name == n for n, t in pretrained.DEFAULT_TAGS.items())
  seresnet50 = pretrained.TAGS[HUB_TAG]
  assert (seresnet50.test_size, seresnet50.test_crop_pct, seresnet50.interpolation) == (288, 0.95, 'bicubic')
  assert pretrained.TAGS['legacy_seresnet50.in1k'].top1 == pytest.approx(77.644)
  assert pretrained.TAGS['legacy_seresnet50.in1k'].hub_id is None  # PyTorch file only
  assert 'seresnet50.ra2_in1k' in pretrained.table()


@pytest.mark.parametrize('value, name, expected', [
    (True, 'seresnet50', ('seresnet50', 'seresnet50.a1_in1k', 'timm/seresnet50.a1_in1k')),
    ('seresnet50.ra2_in1k', None, ('seresnet50', HUB_TAG, 'timm/seresnet50.ra2_in1k')),
    ('ra2_in1k', 'seresnet50', ('seresnet50', HUB_TAG, 'timm/seresnet50.ra2_in1k')),
    ('hf-hub:timm/seresnet50.ra2_in1k', None, ('seresnet50', HUB_TAG, 'timm/seresnet50.ra2_in1k')),
    ('hf-hub:someone/my-finetune', 'seresnext26d_32x4d', ('seresnext26d_32x4d', None, 'someone/my-finetune')),
    ('legacy_senet154.in1k', None, ('legacy_senet154', 'legacy_senet154.in1k', None)),
])
def test_resolve_every_form(value, name, expected):
  source = pretrained.resolve(value, name)
  assert (source.name, source.tag, source.hub_id, source.path) == (*expected, None)


@pytest.mark.parametrize('value, name, message', [
    (True, 'seresnet18', "no pretrained weights for 'seresnet18'"),
    ('seresnet50.rb2_in1k', None, "unknown pretrained tag 'seresnet50.rb2_in1k'; did you mean seresnet50.ra2_in1k"),
    ('seresnet50.ra2_in1k', 'resnet50', "holds 'seresnet50' weights, not 'resnet50'"),
    ('/nowhere/model.safetensors', NAME, "'/nowhere/model.safetensors' does not exist"),
    ('model.pth', NAME, 'python -m se_flax.weights.pretrained --convert model.pth'),
    (3, NAME, 'must be True, a tag'),
])
def test_resolve_errors(value, name, message):
  with pytest.raises((ValueError, FileNotFoundError)) as info:
    pretrained.resolve(value, name)
  assert message in str(info.value) and '\n' not in str(info.value)


def test_local_file_equals_converter(weights_file):
  """A .safetensors file (no network) loads to exactly the converter's variables and logits."""
  module, variables = se_flax.create_model(NAME, pretrained=weights_file)
  expected_module, expected = convert.from_timm(NAME, convert.load_safetensors(weights_file))
  assert module == expected_module
  np.testing.assert_array_equal(np.asarray(_logits(module, variables)), np.asarray(_logits(module, expected)))
  assert module.num_classes == 1000


def test_head_replacement(weights_file, caplog):
  with caplog.at_level(logging.INFO):
    module, variables = convert.load_pretrained(weights_file, NAME, num_classes=7, rng=jax.random.key(1))
  _, full = convert.from_timm(NAME, convert.load_safetensors(weights_file))
  assert module.num_classes == 7 and variables['params']['fc']['kernel'].shape == (512, 7)
  assert not np.allclose(variables['params']['fc']['kernel'], full['params']['fc']['kernel'][:, :7])
  np.testing.assert_array_equal(variables['params']['layer4_1']['conv2']['kernel'],
                                full['params']['layer4_1']['conv2']['kernel'])
  lines = [r.getMessage() for r in caplog.records if 'head fc replaced' in r.getMessage()]
  assert len(lines) == 1 and '1000 -> 7 classes' in lines[0]
  assert _logits(module, variables).shape == (2, 7)


def test_hub_tag_from_the_cache_and_the_download_path(weights_file, offline_hub, monkeypatch):
  """Not cached + offline: the real hub call fails and the error says what, where and how. Then a
  fake network (in place of hf_hub_download's download) fills the cache; the next load is served
  from the cache by the real huggingface_hub, with the network still off."""
  with pytest.raises(pretrained.PretrainedNotFoundError) as info:
    pretrained.fetch(pretrained.resolve(HUB_TAG))
  message = str(info.value)
  assert '\n' not in message
  for part in ('model.safetensors', 'timm/seresnet50.ra2_in1k', offline_hub,
               'https://huggingface.co/timm/seresnet50.ra2_in1k/resolve/main/model.safetensors',
               'models--timm--seresnet50.ra2_in1k', f'{HUB_TAG}.safetensors'):
    assert part in message, part

  real_download = huggingface_hub.hf_hub_download
  calls = []

  def fake_download(repo_id, filename, **kw):
    """Stands in for the network: puts the file where the hub cache keeps it."""
    calls.append((repo_id, filename, kw.get('local_files_only', False)))
    if kw.get('local_files_only'):
      return real_download(repo_id, filename, **kw)
    folder = pathlib.Path(offline_hub) / ('models--' + repo_id.replace('/', '--'))
    revision = '0' * 40
    (folder / 'refs').mkdir(parents=True, exist_ok=True)
    (folder / 'refs' / 'main').write_text(revision)
    target = folder / 'snapshots' / revision / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(pathlib.Path(weights_file).read_bytes())
    return str(target)

  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', fake_download)
  first = pretrained.fetch(pretrained.resolve(HUB_TAG))
  assert calls == [('timm/seresnet50.ra2_in1k', 'model.safetensors', True),
                   ('timm/seresnet50.ra2_in1k', 'model.safetensors', False)]
  assert first.startswith(offline_hub)
  calls.clear()
  again = pretrained.fetch(pretrained.resolve('hf-hub:timm/seresnet50.ra2_in1k'))
  assert again == first and calls == [('timm/seresnet50.ra2_in1k', 'model.safetensors', True)]


def test_hub_errors_become_one_line(offline_hub, monkeypatch):
  def missing_repo(repo_id, filename, **kw):
    if kw.get('local_files_only'):
      raise hub_errors.LocalEntryNotFoundError('not cached')
    raise hub_errors.EntryNotFoundError(f'404 for {repo_id}/{filename}')

  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', missing_repo)
  with pytest.raises(pretrained.PretrainedNotFoundError, match=r'EntryNotFoundError: 404 for someone/x'):
    pretrained.fetch(pretrained.resolve('hf-hub:someone/x', NAME))


def test_tag_from_the_local_dir_and_pth_only_tags(weights_file, offline_hub):
  """A legacy tag (PyTorch file only) says how to convert it; once placed, it loads by name."""
  with pytest.raises(pretrained.PretrainedNotFoundError) as info:
    se_flax.create_model(NAME, pretrained=True)
  assert 'seresnet18-4bb0ce65.pth' in str(info.value) and '--convert FILE.pth --tag legacy_seresnet18.in1k' \
      in str(info.value)
  local = pathlib.Path(pretrained.local_dir()) / 'legacy_seresnet18.in1k.safetensors'
  local.parent.mkdir(parents=True)
  local.write_bytes(pathlib.Path(weights_file).read_bytes())
  module, variables = se_flax.create_model(NAME, pretrained=True)
  _, expected = convert.from_timm(NAME, convert.load_safetensors(weights_file))
  np.testing.assert_array_equal(variables['params']['fc']['kernel'], expected['params']['fc']['kernel'])


def test_preprocessing_maps_to_data_fields():
  fields = pretrained.data_fields(pretrained.eval_preprocessing(HUB_TAG))
  assert fields == {'image_size': 288, 'eval_resize': 303, 'eval_interpolation': 'bicubic', 'eval_antialias': True,
                    'eval_backend': 'pil', 'mean': (123.675, 116.28, 103.53), 'std': (58.395, 57.12, 57.375)}
  train = pretrained.data_fields(pretrained.train_preprocessing('resnet50.tv2_in1k'))
  assert (train['image_size'], train['eval_resize'], train['eval_interpolation']) == (176, 201, 'bilinear')
  assert pretrained.data_fields(pretrained.eval_preprocessing('resnet34.ra4_e3600_r224_in1k'))['mean'] == (127.5,) * 3
  assert '81.28%' in pretrained.reference_line(HUB_TAG) and '288 px' in pretrained.reference_line(HUB_TAG)


def test_evaluate_a_tag_with_its_preprocessing(weights_file, offline_hub, tmp_path):
  """eval.py --pretrained=TAG: the tag's resolution, crop, interpolation and mean/std, and its reference."""
  from configs import imagenet as imagenet_config
  from se_flax import evaluation
  from se_flax.data import input_pipeline
  import tfds_mocks
  tag = 'legacy_seresnet18.in1k'
  local = pathlib.Path(pretrained.local_dir()) / f'{tag}.safetensors'
  local.parent.mkdir(parents=True)
  local.write_bytes(pathlib.Path(weights_file).read_bytes())
  config = imagenet_config.get_config()
  config.data.data_dir = str(tmp_path / 'tfds')
  config.eval.global_batch_size = 8
  with tfds_mocks.mock_tfds('imagenet2012', 8, config.data.data_dir):
    result = evaluation.evaluate_pretrained(config, tag)
    batch = next(input_pipeline.eval_iterator(config.data, global_batch_size=8))
  assert (config.data.image_size, config.data.eval_resize, config.data.eval_interpolation) == (224, 256, 'bicubic')
  assert config.data.eval_antialias and result['reference_top1'] == pytest.approx(71.766)
  assert batch['image'].shape == (8, 224, 224, 3)
  # The input is pretrained.preprocess of each stored JPEG, bit for bit (PIL through tf.numpy_function).
  import tensorflow_datasets as tfds
  with tfds_mocks.mock_tfds('imagenet2012', 8, str(tmp_path / 'raw')):
    raw = tfds.builder('imagenet2012').as_dataset(split='validation', shuffle_files=False,
                                                  decoders={'image': tfds.decode.SkipDecoding()})
    jpegs = [ex['image'] for ex in tfds.as_numpy(raw)]
  np.testing.assert_array_equal(batch['image'], np.stack([pretrained.preprocess(tag, j) for j in jpegs]))
  module, variables = convert.from_timm(NAME, convert.load_safetensors(weights_file))
  logits = np.asarray(jax.jit(functools.partial(module.apply, train=False))(variables, batch['image']))
  assert result['top1'] == pytest.approx(np.mean(np.argmax(logits, -1) == batch['label']), abs=1e-9)
  assert result['num_examples'] == 8 and result['tag'] == tag


def test_centre_view_uses_torchvisions_arithmetic():
  """timm's eval transform (torchvision Resize(short side) + CenterCrop): long side
  int(short * long / short_in), crop offsets round((side - size) / 2) with halves to even."""
  import tensorflow as tf
  from se_flax.data import input_pipeline
  image = tf.constant(np.random.default_rng(0).uniform(0, 255, (300, 451, 3)), tf.float32)
  got = input_pipeline._centre_view(image, 200, 197)
  long_side = int(200 * 451 / 300)  # 300 (rounding would give 301)
  top, left = int(round((200 - 197) / 2.0)), int(round((long_side - 197) / 2.0))  # 2, 52
  expected = tf.image.resize(image, [200, long_side], method='bilinear')[top:top + 197, left:left + 197]
  np.testing.assert_array_equal(got.numpy(), expected.numpy())
  # Without a resize (the short side already fits): offsets 2 (1.5 rounds to even) and 3.
  small = tf.reshape(tf.range(11 * 14, dtype=tf.float32), (11, 14, 1))
  np.testing.assert_array_equal(input_pipeline._centre_view(small, 11, 8).numpy(), small.numpy()[2:10, 3:11])


def test_evaluating_weights_on_a_dataset_with_other_classes_is_an_error(weights_file):
  from configs import digits as digits_config
  from se_flax import evaluation
  with pytest.raises(ValueError) as info:
    evaluation.evaluate_pretrained(digits_config.get_config(), weights_file, name=NAME)
  assert "predict 1000 classes but dataset 'digits' has 10" in str(info.value) and '\n' not in str(info.value)


# ---------------------------------------------------------------------------------------------
# The tag's eval input equals timm's (tests/golden/preprocess: make_preprocess_golden.py, timm 1.0.31).


@pytest.fixture(scope='module')
def live_timm(tmp_path_factory):
  """Where torch and timm are installed: make_preprocess_golden.py's output for the installed timm
  (every tag's data config, and the whole arrays), written by a subprocess (torch and TensorFlow in
  one process can crash); None elsewhere."""
  if importlib.util.find_spec('torch') is None or importlib.util.find_spec('timm') is None:
    return None
  import os
  import subprocess
  out = tmp_path_factory.mktemp('live_timm')
  env = {**os.environ, 'PYTHONPATH': os.pathsep.join(p for p in sys.path if p)}
  proc = subprocess.run([sys.executable, str(GOLDEN / 'make_preprocess_golden.py'), '--out', str(out), '--full',
                         str(out)], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads((out / 'timm_eval.json').read_text()), np.load(out / 'timm_eval_full.npz')


@pytest.mark.parametrize('tag', sorted(pretrained.TAGS))
def test_every_tags_preprocessing_is_timms(tag, live_timm):
  """The table's test resolution, crop, interpolation and mean/std are what timm resolves for the tag
  (the committed record of timm 1.0.31, and the installed timm where there is one)."""
  prep = pretrained.eval_preprocessing(tag)
  records = [TIMM_EVAL] + ([live_timm[0]] if live_timm else [])
  for cfg in [record['configs'][record['tags'][tag]] for record in records]:
    assert (prep.image_size, prep.crop_pct, prep.interpolation) == (cfg['input_size'][-1], cfg['crop_pct'],
                                                                    cfg['interpolation'])
    assert prep.mean == pytest.approx(cfg['mean']) and prep.std == pytest.approx(cfg['std'])


def _first_tag(key: str) -> str:
  return next(t for t, k in TIMM_EVAL['tags'].items() if k == key)


@pytest.mark.parametrize('key', sorted(TIMM_EVAL['configs']))
def test_preprocess_equals_timms_references(key):
  """Each distinct eval transform of the table on two real JPEGs and PNG crops of them at other sizes
  and aspects: timm's 0..255 levels at a grid of pixels and per-channel sums over the whole crop."""
  references = np.load(GOLDEN / 'preprocess' / 'timm_eval.npz')
  tag, cfg = _first_tag(key), TIMM_EVAL['configs'][key]
  (row, col), stride = TIMM_EVAL['offset'], TIMM_EVAL['stride']
  mean, std = np.float32(cfg['mean']), np.float32(cfg['std'])
  for i, name in enumerate(photos.NAMES):
    got = pretrained.preprocess(tag, photos.encoded(name))
    assert got.shape == (cfg['input_size'][-1],) * 2 + (3,) and got.dtype == np.float32, name
    expected = (references[key][i].astype(np.float32) / 255 - mean) / std  # timm's formula
    np.testing.assert_allclose(got[row::stride, col::stride], expected, atol=1e-5, rtol=0, err_msg=name)
    levels = np.rint((got * std + mean) * 255).astype(np.int64)
    np.testing.assert_array_equal(levels.reshape(-1, 3).sum(0), references[f'{key}/sum'][i], err_msg=name)


@pytest.mark.parametrize('key', sorted(TIMM_EVAL['configs']))
def test_preprocess_equals_live_timm(key, live_timm):
  """Where torch and timm are installed: the whole arrays, against the installed timm's transform."""
  if live_timm is None:
    pytest.skip('torch and timm are not installed (the committed references are checked instead)')
  record, arrays = live_timm
  tag = next(t for t, k in record['tags'].items() if k == key)
  for name in photos.NAMES:
    np.testing.assert_allclose(pretrained.preprocess(tag, photos.encoded(name)), arrays[f'{key}/{name}'],
                               atol=1e-5, rtol=0, err_msg=name)


def test_preprocess_rejects_unknown_tags_and_bad_images():
  with pytest.raises(ValueError, match="unknown pretrained tag 'seresnet50.nope'"):
    pretrained.preprocess('seresnet50.nope', photos.encoded('china'))
  from PIL import UnidentifiedImageError
  with pytest.raises(UnidentifiedImageError):
    pretrained.preprocess(HUB_TAG, b'not an image')
