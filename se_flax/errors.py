"""The errors a person running se_flax can act on, and how the command-line tools report them.

Every such error derives from `UserError`, next to the built-in class it has always been (a
busy workdir is still a ValueError, missing data still a FileNotFoundError), so `except
ValueError` keeps working and the tools turn them all into one line without knowing their modules.
"""


class UserError(Exception):
  """Bad input, or a run stopped for a reason its owner can fix: printed as one line, exit code 1."""


class ConfigError(UserError, ValueError):
  """The config, the flags or the workdir were refused before the run started."""


# What the command-line tools print as one line: se_flax's own errors, and the ValueError and
# FileNotFoundError that validating an input raises (a bad value, a missing file).
INPUT_ERRORS = (UserError, ValueError, FileNotFoundError)
