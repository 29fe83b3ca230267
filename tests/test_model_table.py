"""Every table about the models is derived from se_flax/models/facts.py: the registry's reference
strings, the weights package's tag table, default tags and converter names, and the README's
model table (what `python -m se_flax.tools.model_table` prints)."""

from __future__ import annotations

import pathlib

import pytest

from se_flax import models
from se_flax.models import facts
from se_flax.tools import model_table
from se_flax.weights import convert, pretrained

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def _readme_model_rows() -> dict[str, list[str]]:
  """name -> [params, GMACs, reference] of the README's ImageNet model table."""
  lines = README.read_text().split('\n')
  start = lines.index('| name | params | GMACs | reference top-1 (%) |') + 2
  rows = {}
  for line in lines[start:]:
    if not line.startswith('| `'):
      break
    cells = [c.strip() for c in line.strip('|').split('|')]
    rows[cells[0].strip('`')] = cells[1:]
  return rows


def test_weights_tables_are_the_fact_table():
  assert pretrained.TAGS is facts.TAGS and pretrained.DEFAULT_TAGS is facts.DEFAULT_TAGS
  assert convert.TIMM_NAMES is facts.TIMM_NAMES
  assert pretrained.PTH_ONLY == {t: facts.TAGS[t].pth_url for t in facts.TAGS if facts.TAGS[t].pth_url}


def test_registry_reference_is_derived_from_the_tags():
  # seresnet50.ra2_in1k: 81.284 at 288 px, crop 0.95 (timm results-imagenet.csv, test_input_size).
  assert pretrained.TAGS['seresnet50.ra2_in1k'].top1 == pytest.approx(81.284)
  assert models.spec('seresnet50').reference == '81.28 (ra2, 288 px); paper 76.71'
  assert models.spec('legacy_seresnet50').facts.default_tag == 'legacy_seresnet50.in1k'
  assert models.spec('seresnet_tiny').reference == ''


def test_readme_reference_column_is_the_registry_reference():
  rows = _readme_model_rows()
  assert set(rows) == set(facts.TIMM_NAMES)
  for name, (_, _, reference) in rows.items():
    assert reference == (models.spec(name).reference or '-'), name


@pytest.mark.parametrize('name', ['resnet18', 'seresnet50'])
def test_readme_row_equals_the_tool(name):
  params, gmacs, reference = _readme_model_rows()[name]
  _, tool_params, tool_gmacs, _, tool_reference = model_table.model_row(name)
  assert (params, gmacs, reference) == (f'{tool_params:,}', f'{tool_gmacs:.3f}', tool_reference or '-')
