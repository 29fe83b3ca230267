"""Excitation non-linearity: sigmoid, tanh, ReLU (paper Table 12), plus the no-SE baseline."""

from configs import sweeps
from se_flax import hyper


def get_sweep(config, arg=None):
  del config
  return sweeps.members(hyper.sweep('config.model.se.gate', ['sigmoid', 'tanh', 'relu']), arg)


def get_paper(config):
  del config
  return [({'model.se.gate': 'sigmoid'}, sweeps.PAPER_SE_DEFAULT),
          ({'model.se.gate': 'tanh'}, dict(top1_err=23.00, top5_err=6.38)),
          ({'model.se.gate': 'relu'}, dict(top1_err=23.47, top5_err=6.98)),
          (sweeps.NO_SE, sweeps.PAPER_BASELINE)]
