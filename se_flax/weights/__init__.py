"""Weights from outside a run: timm conversion, pretrained tags and hub files, init_from.

  convert.py     timm (PyTorch) state dicts -> flax variables of the zoo's models
  pretrained.py  the tag table (derived from se_flax/models/facts.py), hub download, preprocessing
  init_from.py   starting a run from a checkpoint, tag or file (config.init_from, fine-tuning)

This package imports `se_flax.models`; `se_flax.models` never imports it.
`se_flax.create_model(name, pretrained=...)` is the entry that composes the two; `from se_flax
import convert` (pretrained, finetune) still finds these modules under their old names.
"""
