"""Reduction ratio r of the excitation bottleneck (paper Table 10), plus the no-SE baseline.

  python -m se_flax.tools.sweep --config=configs/digits.py --sweep=configs/sweeps/reduction.py --workdir=DIR
"""

from configs import sweeps
from se_flax import hyper

RATIOS = (2, 4, 8, 16, 32)


def get_sweep(config, arg=None):
  del config  # the same ratios for every network
  return sweeps.members(hyper.sweep('config.model.se.reduction', RATIOS), arg)


def get_paper(config):
  del config
  t10 = {2: (22.29, 6.00, 45.7), 4: (22.25, 6.09, 35.7), 8: (22.26, 5.99, 30.7), 16: (22.28, 6.03, 28.1),
         32: (22.72, 6.20, 26.9)}
  rows = [({'model.se.reduction': r}, dict(top1_err=a, top5_err=b, params_m=m))
          for r, (a, b, m) in t10.items()]
  return rows + [(sweeps.NO_SE, sweeps.PAPER_BASELINE)]
