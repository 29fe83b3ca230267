"""Wall-clock time of steps, for the training loop's img/s and ETA and the sweep runner's progress."""

from __future__ import annotations

import time


def hms(seconds: float) -> str:
  """3723.4 -> '1:02:03' (a negative time counts as 0)."""
  s = int(max(0, seconds))
  return f'{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}'


class Stopwatch:
  """Seconds and steps between laps, summed; `restart` leaves out the time since the last lap
  (compilation, evaluation), so that the sums count training alone."""

  def __init__(self, step: int):
    self.seconds, self.steps = 0.0, 0
    self._time, self._step = time.time(), step

  def lap(self, step: int) -> tuple[float, int]:
    """Add the seconds and steps since the last lap (or restart) to the sums, and return them."""
    now = time.time()
    seconds, steps = now - self._time, step - self._step
    self.seconds, self.steps = self.seconds + seconds, self.steps + steps
    self._time, self._step = now, step
    return seconds, steps

  def restart(self, step: int) -> None:
    self._time, self._step = time.time(), step
