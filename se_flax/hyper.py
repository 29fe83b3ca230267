"""Sweeps as data: lists of override dicts (dotted config paths -> values), built from small helpers.

  hyper.product([hyper.sweep('config.model.se.reduction', [2, 4, 8, 16, 32]),
                 hyper.sweep('config.seed', [0, 1, 2])])

A sweep file (configs/sweeps/*.py) defines `get_sweep(config[, arg])` returning such a list for
the base config it is given, so one sweep runs on digits, CIFAR or ImageNet alike. It may also
define `get_paper(config)`, a list of (match, figures) pairs: `match` is a dict of overrides (e.g.
`{'model.se.reduction': 16}`), `figures` the paper's `top1_err`, `top5_err` (%) and `params_m`
for the settings that contain it, which reports print beside the measured ones.
"""

from __future__ import annotations

import builtins
import copy
import importlib.util
import itertools
import os
from typing import Any, Iterable, Sequence

import ml_collections

Overrides = dict[str, Any]
SEED = 'seed'
MAX_NAME_BYTES = 255  # a directory name's limit on common filesystems


def _key(path: str) -> str:
  """'config.model.se.reduction' and 'model.se.reduction' name the same field."""
  return path[len('config.'):] if path.startswith('config.') else path


def sweep(path: str, values: Iterable[Any]) -> list[Overrides]:
  """One field over `values`: [{path: v} for v in values]."""
  return [{_key(path): v} for v in values]


def fixed(path: str, value: Any) -> list[Overrides]:
  """One field at one value (a one-member sweep, for use inside `product`)."""
  return [{_key(path): value}]


def _merged(parts: Sequence[Overrides]) -> Overrides:
  """One member from one override dict of each sweep (a field set twice to different values is an error)."""
  merged = {}
  for part in parts:
    _merge_into(merged, part)
  return merged


def product(sweeps: Sequence[list[Overrides]]) -> list[Overrides]:
  """Every combination, the first sweep varying slowest (as nested loops would)."""
  return [_merged(combo) for combo in itertools.product(*sweeps)]


def zip(sweeps: Sequence[list[Overrides]]) -> list[Overrides]:  # pylint: disable=redefined-builtin
  """Element-wise combination of sweeps of equal length."""
  lengths = {len(s) for s in sweeps}
  if len(lengths) > 1:
    raise ValueError(f'hyper.zip needs sweeps of equal length, got lengths {[len(s) for s in sweeps]}')
  return [_merged(combo) for combo in builtins.zip(*sweeps)]


def chain(sweeps: Sequence[list[Overrides]]) -> list[Overrides]:
  """One sweep after another (e.g. the reduction ratios, then the no-SE baseline)."""
  return [dict(m) for s in sweeps for m in s]


def _merge_into(merged: Overrides, part: Overrides) -> None:
  for k, v in part.items():
    k = _key(k)
    if k in merged and merged[k] != v:
      raise ValueError(f'field {k!r} is set twice in one sweep member ({merged[k]!r} and {v!r})')
    merged[k] = v


# ---------------------------------------------------------------------------------------------
# Names: a member's sub-workdir and a setting's row are named after the overrides that vary.


_SAFE = frozenset('._+-')


def _escape(text: str, extra: str = '') -> str:
  """Letters, digits and `._+-` as they are; any other character (and those in `extra`) as %XX of
  its UTF-8 bytes, so that different texts stay different ('a/b' -> 'a%2Fb', 'a_b' -> 'a_b')."""
  return ''.join(c if (c.isascii() and c.isalnum() or c in _SAFE) and c not in extra
                 else ''.join(f'%{b:02X}' for b in c.encode()) for c in text)


def format_value(value: Any) -> str:
  """A short, filesystem-safe spelling: 8, 0.1, tanh, False, T-F-F-T (a tuple of booleans).

  Different values of one type get different spellings: characters other than letters, digits and
  `._+-` become %XX, and a '-' inside a tuple element (a negative number, a nested tuple) %2D.
  """
  if isinstance(value, (tuple, list)):
    return '-'.join(('T' if x else 'F') if isinstance(x, bool) else _escape(format_value(x), '-')
                    for x in value)
  return _escape(str(value))


def _short_keys(keys: Iterable[str]) -> dict[str, str]:
  """Each dotted path by its last component, or the whole path where that would be ambiguous."""
  keys = list(dict.fromkeys(keys))
  last = [k.rsplit('.', 1)[-1] for k in keys]
  return {k: (s if last.count(s) == 1 else k) for k, s in builtins.zip(keys, last)}


def varying_keys(members: Sequence[Overrides]) -> list[str]:
  """Fields whose value differs between members (or is absent in some), in first-seen order."""
  keys = list(dict.fromkeys(k for m in members for k in m))
  missing = object()
  return [k for k in keys if len({repr(m.get(k, missing)) for m in members}) > 1]


def member_names(members: Sequence[Overrides]) -> list[str]:
  """Sub-workdir names, e.g. 'reduction=8,seed=0', 'enabled=False,seed=2'; unique and stable.

  Only the fields that vary across the sweep, and the seed, appear (fixed ones are the same for all).
  """
  keys = varying_keys(members) or list(dict.fromkeys(k for m in members for k in m))
  if SEED not in keys and any(SEED in m for m in members):
    keys.append(SEED)  # always named: a rerun with more seeds keeps the finished members' names
  keys = sorted(keys, key=lambda k: k == SEED)  # the seed last
  short = _short_keys(keys)
  names = [','.join(f'{short[k]}={format_value(m[k])}' for k in keys if k in m) or 'base'
           for m in members]
  first: dict[str, int] = {}
  for i, name in enumerate(names):
    j = first.setdefault(name, i)
    if j != i:
      same = 'the same overrides twice' if members[i] == members[j] else 'values spelled alike'
      raise ValueError(f'sweep members {j} and {i} share the name {name!r} ({same}: {members[j]} and '
                       f'{members[i]}); every member needs its own workdir')
  too_long = [n for n in names if len(n.encode()) > MAX_NAME_BYTES]
  if too_long:
    raise ValueError(f'sweep member name {too_long[0][:60]}... is {len(too_long[0].encode())} bytes, more '
                     f'than a directory name may have ({MAX_NAME_BYTES}); sweep fewer fields at once')
  return names


def setting_name(overrides: Overrides, keys: Sequence[str] | None = None) -> str:
  """A member's setting: its name without the seed (the row its seeds are averaged into)."""
  keys = [k for k in (keys if keys is not None else overrides) if k != SEED and k in overrides]
  short = _short_keys(keys)
  return ','.join(f'{short[k]}={format_value(overrides[k])}' for k in keys) or 'base'


# ---------------------------------------------------------------------------------------------
# Sweep files and applying overrides.


def load_module(path: str):
  """Import a sweep (or config) file by path."""
  if not os.path.isfile(path):
    raise ValueError(f'sweep file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location(f'se_flax_sweep_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'sweep file {path!r} defines no get_sweep(config[, arg])')
  return module


def load_sweep(spec: str, config: ml_collections.ConfigDict):
  """'path.py[:arg]' -> (module, members): `module.get_sweep(config[, arg])` checked against config."""
  path, _, arg = spec.partition(':')
  module = load_module(path)
  members = module.get_sweep(config, arg) if arg else module.get_sweep(config)
  if not isinstance(members, (list, tuple)) or not all(isinstance(m, dict) for m in members):
    raise ValueError(f'get_sweep of {path!r} must return a list of override dicts (e.g. from hyper.sweep '
                     f'and hyper.product), got {type(members).__name__}')
  members = [{_key(k): v for k, v in m.items()} for m in members]
  if not members:
    raise ValueError(f'sweep {spec!r} has no members')
  for m in members:  # unknown fields, bad types, values train.py's command line cannot carry: fail here
    apply_overrides(config, m)
    override_flags(m)
  return module, members


def apply_overrides(config: ml_collections.ConfigDict, overrides: Overrides) -> ml_collections.ConfigDict:
  """A copy of `config` with the dotted-path overrides set (an unknown field raises ValueError)."""
  config = copy.deepcopy(config)
  for path, value in overrides.items():
    *parents, leaf = _key(path).split('.')
    node = config
    try:
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise KeyError(leaf)
      node[leaf] = tuple(value) if isinstance(value, list) else value
    except (KeyError, TypeError) as e:
      raise ValueError(f'sweep override {path}={value!r} does not fit the config: {e}') from None
  return config


def override_flags(overrides: Overrides) -> list[str]:
  """Command-line spelling for train.py: ['--config.model.se.reduction=8', ...].

  A tuple is spelled as a Python literal, `(3,)` for one element. None has no command-line
  spelling (ml_collections would read 'None' as a string, or fail to parse it as a number), so
  it is refused: leave the field out of that member instead, which keeps the base config's value.
  """
  flags = []
  for k, v in overrides.items():
    if v is None:
      raise ValueError(f'sweep override {_key(k)}=None cannot be passed to train.py on its command line; '
                       'leave the field out of that member to keep the base config\'s value')
    if isinstance(v, (tuple, list)):
      v = '(' + ', '.join(repr(x) for x in v) + (',)' if len(v) == 1 else ')')
    flags.append(f'--config.{_key(k)}={v}')
  return flags
