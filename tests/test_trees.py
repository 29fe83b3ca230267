"""Flat views of trees: variable paths in the model's order, dotted config fields, JSON round trips."""

from __future__ import annotations

import json
import types

import flax
import jax
import numpy as np

from configs import default
from se_flax import trees


def test_flatten_keeps_the_tree_order_and_stops_at_arrays():
  tree = {'params': {'stem': {'kernel': np.zeros((3, 3))}, 'fc': {'bias': np.zeros(2), 'kernel': np.ones((4, 2))}},
          'batch_stats': {}, 'opt': (np.zeros(1), None, {'mu': jax.ShapeDtypeStruct((5,), np.float32)})}
  flat = trees.flatten(flax.core.freeze(tree))
  assert list(flat) == ['params/stem/kernel', 'params/fc/bias', 'params/fc/kernel', 'opt/0', 'opt/2/mu']
  assert flat['params/fc/kernel'].shape == (4, 2)


def test_flatten_unwraps_an_orbax_metadata_tree():
  wrapped = types.SimpleNamespace(tree={'params': {'fc': {'kernel': jax.ShapeDtypeStruct((4, 2), np.float32)}}})
  assert {k: v.shape for k, v in trees.flatten(wrapped).items()} == {'params/fc/kernel': (4, 2)}


def test_jsonable_is_what_json_reads_back():
  value = {'a': (1, 2.5, None), 3: [True, 'x'], 'dtype': np.dtype('float32')}
  assert trees.jsonable(value) == {'a': [1, 2.5, None], '3': [True, 'x'], 'dtype': 'float32'}
  assert trees.jsonable(value) == json.loads(json.dumps(trees.jsonable(value)))


def test_flat_config_names_every_field_by_its_dotted_path():
  config = default.get_config()
  flat = trees.flat_config(config)
  assert flat['model.se.reduction'] == config.model.se.reduction
  assert flat['init_skip'] == str(tuple(config.init_skip)) and flat['train.num_steps'] is None
  assert not any(k.startswith('distributed.') for k in trees.flat_config(config, skip=('distributed',)))
  assert all(isinstance(v, (int, float, str, bool, type(None))) for v in flat.values())
