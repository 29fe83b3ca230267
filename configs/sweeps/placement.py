"""Where SE sits in the residual block: standard, pre, post, identity (paper Table 14) and on the
3x3 conv's output (Table 15), plus the no-SE baseline."""

from configs import sweeps
from se_flax import hyper

PLACEMENTS = ('standard', 'pre', 'post', 'identity', 'after_3x3')


def get_sweep(config, arg=None):
  del config
  return sweeps.members(hyper.sweep('config.model.se.placement', PLACEMENTS), arg)


def get_paper(config):
  del config
  t14 = {'standard': (22.28, 6.03), 'pre': (22.23, 6.00), 'post': (22.78, 6.35), 'identity': (22.20, 6.15),
         'after_3x3': (22.48, 6.02)}
  return [({'model.se.placement': p}, dict(top1_err=a, top5_err=b)) for p, (a, b) in t14.items()
          ] + [(sweeps.NO_SE, sweeps.PAPER_BASELINE)]
