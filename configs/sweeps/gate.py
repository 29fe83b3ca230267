"""Excitation non-linearity: sigmoid, tanh, ReLU (paper Table 12), plus the no-SE baseline.

Every member starts its residual branches' last BatchNorm scale at 1, not 0: with a zero start,
tanh(0) = relu(0) = 0 holds branch and gate at exactly 0 for ever (models.check_gate_init).
"""

from configs import sweeps
from se_flax import hyper


def get_sweep(config, arg=None):
  del config
  return hyper.product([sweeps.members(hyper.sweep('config.model.se.gate', ['sigmoid', 'tanh', 'relu']), arg),
                        hyper.fixed('config.model.zero_init_last_bn', False)])


def get_paper(config):
  del config
  return [({'model.se.gate': 'sigmoid'}, sweeps.PAPER_SE_DEFAULT),
          ({'model.se.gate': 'tanh'}, dict(top1_err=23.00, top5_err=6.38)),
          ({'model.se.gate': 'relu'}, dict(top1_err=23.47, top5_err=6.98)),
          (sweeps.NO_SE, sweeps.PAPER_BASELINE)]
