"""The paper's central question on any network: with SE (the network's own settings) or without, x seeds.

    python -m se_flax.tools.sweep --config=configs/digits.py:se_mobilenet_tiny \
        --sweep=configs/sweeps/se_vs_baseline.py --workdir=DIR

The SE row keeps the registered SE settings (biases included), so it measures the network as
registered against the same network with the slot empty.
"""

from configs import sweeps
from se_flax import hyper


def get_sweep(config, arg=None):
  del config
  return hyper.product([hyper.chain([[{'model.se.enabled': True}], [dict(sweeps.NO_SE)]]), sweeps.seeds(arg)])
