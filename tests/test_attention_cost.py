"""se_flax.tools.attention_cost: the counts it reports are the networks' own, the overhead is a ratio
of medians against the empty slot, and a bad kind is a one-line error."""

from __future__ import annotations

import jax
import pytest

from se_flax import models
from se_flax.tools import attention_cost


def _count(model) -> int:
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, 32, 32, 3)), train=False))
  return models.count_params(shapes['params'])


def test_variant_counts_are_the_networks_own():
  """One real variant (compiled train step of the tiny net with ECA in its slot)."""
  v = attention_cost._variant('seresnet_tiny', 'eca', batch=2, image_size=32)  # pylint: disable=protected-access
  eca = models.create('seresnet_tiny', attn='eca', num_classes=1000)
  assert v['params'] == _count(eca) and v['macs'] == models.count_macs(eca, 32)


def test_overhead_is_the_ratio_of_medians_over_interleaved_rounds(monkeypatch):
  durations = {'none': [10, 30, 20], 'eca': [12, 50, 26]}  # medians 20 and 26

  def fake_variant(model_name, kind, batch, image_size):
    del model_name, batch, image_size
    times = iter(durations[kind])

    def step(state, data):
      del data
      fake_now[0] += next(times) / 1e3
      return state, {}
    return {'step': step, 'state': 0, 'data': None, 'params': {'none': 100, 'eca': 103}[kind],
            'macs': {'none': 1000, 'eca': 1500}[kind], 'times': []}

  fake_now = [0.0]
  monkeypatch.setattr(attention_cost, '_variant', fake_variant)
  monkeypatch.setattr(attention_cost.benchmark.time, 'perf_counter', lambda: fake_now[0])
  rows = {r['kind']: r for r in attention_cost.measure('seresnet_tiny', ['eca'], batch=2, image_size=32, rounds=3)}
  assert list(rows) == ['none', 'eca']
  assert rows['eca']['params_added'] == 3 and rows['eca']['macs_added'] == 500
  assert rows['none']['overhead'] == 1.0
  assert rows['eca']['step_ms'] == pytest.approx(26.0) and rows['eca']['overhead'] == pytest.approx(1.3)
  assert rows['eca']['rounds_ms'] == pytest.approx([12.0, 50.0, 26.0])
  assert '| eca | 103 | 3 | 1,500 | 500 | 26 | 1.300 |' in attention_cost.format_table(list(rows.values()))


def test_unknown_kind_is_named():
  with pytest.raises(ValueError, match=r"--kinds: squeeze not among se, ese"):
    attention_cost.measure('seresnet_tiny', ['squeeze'], batch=2, image_size=32, rounds=1)
