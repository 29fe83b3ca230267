"""The programs as functions: eval.py's choice of what to evaluate is refused in one line when ambiguous."""

from __future__ import annotations

import pytest

from configs import digits
from se_flax import errors
from se_flax import run


@pytest.mark.parametrize('kwargs, message', [
    (dict(pretrained='seresnet50.ra2_in1k', timm_weights='w.safetensors'), 'name two different weights'),
    (dict(timm_model='seresnet50'), 'must be given together'),
    (dict(timm_weights='w.safetensors'), 'must be given together'),
])
def test_evaluate_refuses_an_ambiguous_source_before_reading_anything(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    run.evaluate(digits.get_config(), **kwargs)
