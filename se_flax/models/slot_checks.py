"""One-line errors for attention-slot settings a network cannot honour (shared by VGG, MobileNet, ShuffleNet)."""

from __future__ import annotations

from typing import Sequence

from se_flax.models.se import SEConfig


def check_placement(se: SEConfig | None, allowed: Sequence[str], network: str) -> None:
  """`se.placement` must be one that has a meaning in `network`."""
  if se is not None and se.placement not in allowed:
    raise ValueError(f'SE placement={se.placement!r} has no meaning in {network}; allowed: {", ".join(allowed)}')


def check_stages(se: SEConfig | None, num_stages: int) -> None:
  """`se.stages`, when given, has one entry per stage."""
  if se is not None and se.stages is not None and len(se.stages) != num_stages:
    raise ValueError(f'SE stages={se.stages} needs {num_stages} entries, one per stage')
