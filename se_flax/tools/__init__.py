"""Command-line tools: `python -m se_flax.tools.<name>`."""
