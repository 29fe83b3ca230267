"""se_flax: Squeeze-and-Excitation networks in JAX/Flax."""

from typing import Any

__version__ = '0.1.0'


def create_model(name: str, pretrained: Any = None, **overrides):
  """A registered model, as `timm.create_model`: the module alone, or with `pretrained` (True for
  timm's default tag, a tag such as 'seresnet50.ra2_in1k' or 'ra2_in1k', 'hf-hub:timm/<tag>', or a
  .safetensors file) `(module, variables)` with the weights loaded; a `num_classes` other than the
  checkpoint's gets a freshly initialised classifier. `overrides` as `se_flax.models.create`.

  Imports happen here, not at `import se_flax`, so the package stays light to import.
  """
  from se_flax import models  # pylint: disable=import-outside-toplevel
  if pretrained is None or pretrained is False:
    return models.create(name, **overrides)
  from se_flax.weights import convert  # pylint: disable=import-outside-toplevel
  models.spec(name)
  return convert.load_pretrained(pretrained, name, **overrides)


# Old names of the weights modules: `from se_flax import convert` (pretrained, finetune) keeps
# working, importing se_flax.weights only when asked.
_MOVED = {'convert': 'se_flax.weights.convert', 'pretrained': 'se_flax.weights.pretrained',
          'finetune': 'se_flax.weights.init_from'}


def __getattr__(name: str):
  if name in _MOVED:
    import importlib  # pylint: disable=import-outside-toplevel
    return importlib.import_module(_MOVED[name])
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
