"""Squeeze operator: global average vs global max pooling (paper Table 11), plus the no-SE baseline."""

from configs import sweeps
from se_flax import hyper


def get_sweep(config, arg=None):
  del config
  return sweeps.members(hyper.sweep('config.model.se.squeeze', ['avg', 'max']), arg)


def get_paper(config):
  del config
  return [({'model.se.squeeze': 'avg'}, sweeps.PAPER_SE_DEFAULT),
          ({'model.se.squeeze': 'max'}, dict(top1_err=22.57, top5_err=6.09)),
          (sweeps.NO_SE, sweeps.PAPER_BASELINE)]
