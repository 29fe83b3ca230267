"""Datasets and input pipelines (TensorFlow/TFDS only, never on the GPU).

`input_pipeline` is the entry point for training; `digits` defines the
offline `se_flax_digits` TFDS dataset.
"""
