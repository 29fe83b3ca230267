"""Nested trees as flat dicts: variables by path ('params/fc/kernel'), configs by dotted field
('model.se.reduction'), and any value as JSON reads it back."""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Iterable, Mapping


def flatten(tree: Any) -> dict[str, Any]:
  """{'params': {'fc': {'kernel': x}}} -> {'params/fc/kernel': x}, in the tree's own order (a
  model's: stem first), for variables, a state dict or an orbax metadata tree. Anything with a
  `.shape` is a leaf; None and empty containers are left out."""
  flat = {}

  def walk(node: Any, path: tuple[str, ...]) -> None:
    if isinstance(node, Mapping):
      for k, v in node.items():
        walk(v, (*path, str(k)))
    elif isinstance(node, (list, tuple)) and not hasattr(node, 'shape'):
      for i, v in enumerate(node):
        walk(v, (*path, str(i)))
    elif node is not None:
      flat['/'.join(path)] = node

  walk(getattr(tree, 'tree', tree), ())  # orbax wraps a metadata tree
  return flat


def matches(key: str, patterns: Iterable[str]) -> bool:
  """Whether a glob matches the variable path `key` ('params/fc/kernel') with or without its
  collection: 'fc/*' and 'params/fc/*' both match it."""
  bare = key.split('/', 1)[-1]
  return any(fnmatch.fnmatchcase(bare, p) or fnmatch.fnmatchcase(key, p) for p in patterns)


def jsonable(value: Any) -> Any:
  """`value` as it reads back from JSON: tuples become lists, dict keys strings, and anything JSON
  has no type for (a dtype, a set) its str."""
  return json.loads(json.dumps(value, default=str))


def flat_config(config, *, skip: Iterable[str] = ()) -> dict[str, Any]:
  """A ConfigDict (or dict) as {'model.se.reduction': 16}: numbers, strings, booleans and None as
  they are, anything else (a tuple, a list) as its str; fields named in `skip` left out."""
  skip = set(skip)

  def walk(d: dict, prefix: str):
    for k, v in d.items():
      if prefix + k in skip:
        continue
      if isinstance(v, dict):
        yield from walk(v, f'{prefix}{k}.')
      else:
        yield prefix + k, v if isinstance(v, (int, float, str, bool, type(None))) else str(v)

  return dict(walk(config.to_dict() if hasattr(config, 'to_dict') else dict(config), ''))
