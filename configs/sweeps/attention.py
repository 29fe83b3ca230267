"""Which channel attention: every kind of the SE slot (se, ese, eca, ge, gc, cbam, srm, fca) x seeds,
plus the network without attention, on any base config.

Each kind starts from its own defaults (se_flax.models.se.KIND_DEFAULTS: the kind's paper, or timm
where timm has the kind) and keeps the network's placement and stage mask, so the rows differ in the
module alone. Unlike the paper's SE ablations (configs/sweeps/reduction.py and friends), the FC
biases are left as each kind defines them. The report adds parameters, multiply-adds and train
img/s per kind and plots accuracy against the parameters each kind adds.

    python -m se_flax.tools.sweep --config=configs/digits.py --sweep=configs/sweeps/attention.py --workdir=DIR
"""

from configs import sweeps
from se_flax import hyper

KINDS = ('se', 'ese', 'eca', 'ge', 'gc', 'cbam', 'srm', 'fca')


def get_sweep(config, arg=None):
  del config
  kinds = hyper.sweep('config.model.se.kind', KINDS)
  return hyper.product([hyper.chain([kinds, [dict(sweeps.NO_SE)]]), sweeps.seeds(arg)])
