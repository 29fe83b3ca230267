"""Workdir names: local paths, 'file://' paths and object-store URLs (gs://...), and the default."""

from __future__ import annotations

import os

from se_flax import errors


def default_workdir(config) -> str:
  return os.path.join('workdirs', f'{config.data.name}_{config.model.name}')


def resolve_workdir(workdir: str) -> str:
  """'file:///a/b' -> '/a/b'; local paths and other URLs (gs://, s3://) stay as they are."""
  return workdir[len('file://'):] if workdir.startswith('file://') else workdir


def is_url(path: str) -> bool:
  return '://' in str(path)


def check_workdir_writable(workdir: str) -> None:
  """Refuse an unwritable local workdir before anything is created. A URL (gs://...) is not probed:
  that would write to it; its storage client fails on the first write instead."""
  workdir = resolve_workdir(workdir)
  if is_url(workdir):
    return
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
    raise errors.ConfigError(f'workdir {workdir!r} is not writable ({path!r} is not a writable directory)')
