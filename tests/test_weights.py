"""se_flax.weights: imports go one way (weights -> models), the old paths still work, and
se_flax.create_model composes zoo and weights."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import se_flax
from se_flax import models

PACKAGE = pathlib.Path(se_flax.__file__).resolve().parent


def _imported_after(statement: str) -> set[str]:
  code = f'import sys\n{statement}\nprint("\\n".join(sorted(sys.modules)))'
  out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True, text=True,
                       cwd=PACKAGE.parent).stdout
  return set(out.split())


def test_models_never_import_weights():
  loaded = _imported_after('import se_flax.models; se_flax.models.create("seresnet_tiny")')
  weights = sorted(m for m in loaded if m.startswith('se_flax.weights') or m in (
      'se_flax.convert', 'se_flax.pretrained', 'se_flax.finetune'))
  assert 'se_flax.models.registry' in loaded and not weights, weights


def _module_imports(path: pathlib.Path) -> set[str]:
  """se_flax modules a file imports, at top level or inside functions."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      found.update(f'{node.module}.{a.name}' for a in node.names)
  return {m for m in found if m.startswith('se_flax.')}


def test_no_import_cycle_through_models_or_weights():
  """No module of se_flax.models names se_flax.weights (or its old paths), and within the weights
  package only pretrained -> convert runs at import time (convert's load_pretrained reaches
  pretrained inside a function, one way)."""
  old_paths = {'se_flax.convert', 'se_flax.pretrained', 'se_flax.finetune', 'se_flax.weights'}
  for path in sorted((PACKAGE / 'models').glob('*.py')):
    bad = {m for m in _module_imports(path) if m in old_paths or m.startswith('se_flax.weights')}
    assert not bad, f'{path.name} imports {bad}'
  for path in sorted((PACKAGE / 'weights').glob('*.py')):
    top_level = ast.parse(path.read_text()).body
    names = {f'{n.module}.{a.name}' for n in top_level if isinstance(n, ast.ImportFrom) and n.module
             for a in n.names}
    assert not names & old_paths, f'{path.name} imports an old path: {names & old_paths}'
  convert_top = {f'{n.module}.{a.name}' for n in ast.parse((PACKAGE / 'weights' / 'convert.py').read_text()).body
                 if isinstance(n, ast.ImportFrom) and n.module for a in n.names}
  assert not {m for m in convert_top if m.startswith('se_flax.weights')}


def test_old_names_are_the_new_modules():
  from se_flax import convert, finetune, pretrained  # pylint: disable=import-outside-toplevel
  from se_flax.weights import convert as new_convert, init_from, pretrained as new_pretrained
  assert convert is new_convert and pretrained is new_pretrained and finetune is init_from


def test_import_se_flax_imports_no_weights_or_models():
  loaded = _imported_after('import se_flax')
  assert not [m for m in loaded if m.startswith(('se_flax.weights', 'se_flax.models', 'jax'))]


def test_create_model_is_the_zoo_without_pretrained():
  assert se_flax.create_model('seresnet_tiny', num_classes=3) == models.create('seresnet_tiny', num_classes=3)


def test_zoo_refuses_pretrained_and_names_the_entry():
  with pytest.raises(ValueError, match=r"se_flax.create_model\('seresnet50', pretrained=True\)"):
    models.create('seresnet50', pretrained=True)
