"""The loop's and the sweep runner's clock: laps summed, restarts leaving time out, H:MM:SS."""

from __future__ import annotations

from se_flax import timing


def test_hms():
  assert [timing.hms(s) for s in (0, 59.9, 3723.4, 36000, -5)] == ['0:00:00', '0:00:59', '1:02:03', '10:00:00',
                                                                   '0:00:00']


def test_stopwatch_sums_laps_and_leaves_out_what_follows_a_restart(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(timing.time, 'time', lambda: now[0])
  watch = timing.Stopwatch(step=10)
  now[0] += 5.0
  assert watch.lap(15) == (5.0, 5)
  now[0] += 30.0  # an evaluation
  watch.restart(15)
  now[0] += 2.0
  assert watch.lap(17) == (2.0, 2)
  assert (watch.seconds, watch.steps) == (7.0, 7)
