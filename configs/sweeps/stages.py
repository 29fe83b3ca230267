"""SE in one stage at a time, and in all stages (paper Table 13), plus the no-SE baseline.

The masks follow the base config's network (three stages for CIFAR nets, four for ImageNet ones).
The paper's stages 2, 3, 4 are the first three stages of ResNet-50 (conv2_x to conv4_x, by their
parameter counts); its figures are attached only for four-stage networks.
"""

from configs import sweeps
from se_flax import hyper


def masks(config) -> list[tuple[bool, ...]]:
  n = sweeps.num_stages(config)
  return [tuple(i == s for i in range(n)) for s in range(n)] + [(True,) * n]


def get_sweep(config, arg=None):
  return sweeps.members(hyper.sweep('config.model.se.stages', masks(config)), arg)


def get_paper(config):
  paper = [(sweeps.NO_SE, sweeps.PAPER_BASELINE)]
  if sweeps.num_stages(config) == 4:
    figures = [dict(top1_err=23.03, top5_err=6.48, params_m=25.6),  # conv2_x only
               dict(top1_err=23.04, top5_err=6.32, params_m=25.7),  # conv3_x only
               dict(top1_err=22.68, top5_err=6.22, params_m=26.4),  # conv4_x only
               None,  # conv5_x alone was not reported
               sweeps.PAPER_SE_DEFAULT]  # all stages
    paper += [({'model.se.stages': m}, f) for m, f in zip(masks(config), figures) if f]
  return paper
