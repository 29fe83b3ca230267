"""se_flax: Squeeze-and-Excitation networks in JAX/Flax."""

__version__ = '0.1.0'
