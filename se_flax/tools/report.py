"""Tables and a plot from a finished (or running) sweep: `python -m se_flax.tools.report DIR`.

Reads DIR/sweep.json (written by `se_flax.tools.sweep`) and each member's final_eval.json, and
writes DIR/report.md, DIR/report.csv and DIR/report.png (or into --out): one row per setting with
the mean +- std over seeds (sample std, n - 1) of test top-1, top-5 and loss, the difference to the
no-SE baseline, parameters, multiply-adds, train img/s, and for the paper's sweeps the paper's
SE-ResNet-50 ImageNet figure for that row (a different dataset and schedule: compare trends only).
Members without final_eval.json (failed, stopped, running or not started), and member
directories started with other overrides than the sweep's, are left out of the means; the report
counts them per row ('seeds': finished of all), lists them with their state, and warns on stderr.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from typing import Any

from absl import app
from absl import flags

FLAGS = flags.FLAGS

METRICS = ('top1', 'top5', 'loss', 'train_img_per_sec')
NO_SE = ('model.se.enabled', False)
PAPER_NOTE = ('paper: SE-ResNet-50 trained on ImageNet, Tables 10-15 (top-1 = 100 - error; their ablation '
              'schedule: ~300 epochs, label smoothing); another dataset, network and schedule, so compare '
              'trends only')


def load_members(sweep_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The manifest and the sweep's members with their results ('result': None where unfinished, and
  'status': 'finished', 'not started', 'unfinished' (failed, stopped or running: 'last_line' of its
  train.log) or 'other overrides' (its directory was started with overrides other than the sweep's))."""
  from se_flax import paths
  from se_flax.tools import sweep
  if paths.is_url(paths.resolve_workdir(sweep_dir)):
    raise ValueError(f'sweep directory {sweep_dir!r} is a URL; sweeps and reports use local or '
                     'network-filesystem directories')
  sweep_dir = paths.resolve_workdir(sweep_dir)
  path = os.path.join(sweep_dir, 'sweep.json')
  if not os.path.exists(path):
    raise ValueError(f'{sweep_dir!r} has no sweep.json (is it a directory written by se_flax.tools.sweep?)')
  try:
    with open(path) as f:
      manifest = json.load(f)
    manifest['members']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'cannot read {path}: {e}') from None
  members = []
  for m in manifest['members']:
    workdir = os.path.join(sweep_dir, m['workdir'])
    result_path = os.path.join(workdir, 'final_eval.json')
    result, status, last_line = None, 'not started', ''
    record = sweep.Member(0, m['name'], m['overrides'], workdir)
    try:
      recorded = record.recorded_overrides()
    except ValueError:
      recorded = None
    if recorded is not None and recorded != m['overrides']:
      status = 'other overrides'
    elif os.path.exists(result_path):
      with open(result_path) as f:
        result, status = json.load(f), 'finished'
    elif os.path.isdir(workdir):
      status, last_line = 'unfinished', sweep._last_error_line(os.path.join(workdir, 'train.log'))  # pylint: disable=protected-access
    members.append({**m, 'result': result, 'status': status, 'last_line': last_line})
  return manifest, members


def _mean_std(values: list[float]) -> tuple[float, float]:
  n = len(values)
  if n == 0:
    return math.nan, math.nan
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan  # one seed: no spread
  return mean, std


def _matches(match: dict, overrides: dict) -> bool:
  return all(k in overrides and overrides[k] == v for k, v in match.items())


def summarize(manifest: dict, members: list[dict]) -> list[dict[str, Any]]:
  """One row per setting (in sweep order): seeds, mean and std of each metric, paper figures."""
  rows: dict[str, dict[str, Any]] = {}
  for m in members:
    row = rows.setdefault(m['setting'], {'setting': m['setting'], 'overrides': m['overrides'], 'members': 0,
                                         'results': []})
    row['members'] += 1
    if m['result'] is not None:
      row['results'].append(m['result'])
  for row in rows.values():
    res = row['results']
    row['n'] = len(res)
    for k in METRICS:
      values = [float(r[k]) for r in res if r.get(k) is not None]
      scale = 100.0 if k in ('top1', 'top5') else 1.0
      row[f'{k}_mean'], row[f'{k}_std'] = (x * scale for x in _mean_std(values))
      row[f'{k}_seeds'] = [v * scale for v in values]
    for k in ('params', 'macs'):
      row[k] = res[0].get(k) if res else None
    row['baseline'] = row['overrides'].get(NO_SE[0], True) is NO_SE[1]
    paper = [p for p in manifest.get('paper', []) if _matches(p['match'], row['overrides'])]
    row['paper'] = paper[0] if paper else None
  base = [r for r in rows.values() if r['baseline'] and r['n']]
  for row in rows.values():
    row['delta_top1'] = row['top1_mean'] - base[0]['top1_mean'] if base else math.nan
    paper_base = next((r['paper'] for r in rows.values() if r['baseline'] and r['paper']), None)
    if row['paper'] and paper_base:
      row['paper_delta_top1'] = paper_base['top1_err'] - row['paper']['top1_err']
    else:
      row['paper_delta_top1'] = math.nan
  return list(rows.values())


# ---------------------------------------------------------------------------------------------
# Writers


def _pm(mean: float, std: float, digits: int = 2) -> str:
  if math.isnan(mean):
    return '-'
  return f'{mean:.{digits}f}' if math.isnan(std) else f'{mean:.{digits}f} ± {std:.{digits}f}'


def _seeds(row: dict) -> str:
  return str(row['n']) if row['n'] == row['members'] else f'{row["n"]} of {row["members"]}'


def _num(x, fmt: str = ',') -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '-'
  return format(x, fmt)


def write_csv(rows: list[dict], path: str) -> None:
  fields = ['setting', 'seeds', 'members', 'top1_mean', 'top1_std', 'top5_mean', 'top5_std', 'loss_mean',
            'loss_std', 'delta_top1_vs_baseline', 'params', 'macs', 'train_img_per_sec_mean', 'paper_top1', 'paper_top5',
            'paper_params_m', 'paper_delta_top1']
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(fields)
    for r in rows:
      p = r['paper'] or {}
      stats = ('top1_mean', 'top1_std', 'top5_mean', 'top5_std', 'loss_mean', 'loss_std', 'delta_top1')
      w.writerow([r['setting'], r['n'], r['members'], *(f'{r[k]:.4f}' for k in stats),
                  r['params'], r['macs'], f'{r["train_img_per_sec_mean"]:.1f}',
                  _paper_acc(p, 'top1_err'), _paper_acc(p, 'top5_err'), p.get('params_m', ''),
                  '' if math.isnan(r['paper_delta_top1']) else f'{r["paper_delta_top1"]:.2f}'])


def _paper_acc(p: dict, key: str) -> str:
  return f'{100 - p[key]:.2f}' if p and p.get(key) is not None else ''


def write_markdown(rows: list[dict], manifest: dict, members: list[dict], path: str, title: str,
                   plot_name: str | None) -> None:
  finished = sum(m['result'] is not None for m in members)
  has_paper = any(r['paper'] for r in rows)
  lines = [f'# {title}', '',
           f'`{manifest.get("command") or manifest.get("sweep", "?")}`: '
           f'{finished} of {len(members)} members finished. Test-split figures, mean ± std over seeds '
           '(sample std); Δ top-1 is against the no-SE baseline, in percentage points.', '']
  if plot_name:
    lines += [f'![{title}]({plot_name})', '']
  head = ['setting', 'seeds', 'top-1 (%)', 'Δ top-1', 'top-5 (%)', 'loss', 'params', 'MACs', 'train img/s']
  if has_paper:
    head += ['paper top-1 (%) †', 'paper Δ †']
  lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * 2 + '---:|' * (len(head) - 2)]
  for r in rows:
    name = r['setting'] + (' (baseline)' if r['baseline'] else '')
    cells = [name, _seeds(r), _pm(r['top1_mean'], r['top1_std']),
             '-' if math.isnan(r['delta_top1']) else f'{r["delta_top1"]:+.2f}',
             _pm(r['top5_mean'], r['top5_std']), _pm(r['loss_mean'], r['loss_std'], 4),
             _num(r['params']), _num(r['macs']), _num(r['train_img_per_sec_mean'], ',.0f')]
    if has_paper:
      p = r['paper']
      cells += [_paper_acc(p, 'top1_err') or '-',
                '-' if math.isnan(r['paper_delta_top1']) else f'{r["paper_delta_top1"]:+.2f}']
    lines.append('| ' + ' | '.join(cells) + ' |')
  lines.append('')
  if has_paper:
    lines += [f'† {PAPER_NOTE}.', '']
  lines += ['Train img/s: each run\'s own figure after its first (compiling) step, evaluation excluded; '
            'runs that share a machine with other work slow down, so compare them only on a quiet one.', '']
  lines += ['Per seed (top-1 %):', '']
  for r in rows:
    lines.append(f'- {r["setting"]}: ' + (', '.join(f'{v:.2f}' for v in r['top1_seeds']) or 'none finished'))
  unfinished = unfinished_lines(members)
  if unfinished:
    lines += ['', f'Unfinished ({len(unfinished)} of {len(members)} members, left out of the means):', '']
    lines += [f'- {u}' for u in unfinished]
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def unfinished_lines(members: list[dict]) -> list[str]:
  """'name: state' for every member without a result."""
  out = []
  for m in members:
    if m['result'] is not None:
      continue
    state = {'not started': 'not started',
             'other overrides': 'its directory was started with other overrides (sweep file changed?)'}.get(
                 m.get('status'), 'failed, stopped or still running')
    last = m.get('last_line')
    out.append(f'{m["name"]}: {state}' + (f'; last log line: {last}' if last else ''))
  return out


def numeric_axis(manifest: dict, rows: list[dict]) -> str | None:
  """The one swept field with numeric values (e.g. model.se.reduction), else None (categorical)."""
  keys = [k for k in manifest.get('varying', []) if k not in ('seed', NO_SE[0])]
  if len(keys) != 1:
    return None
  values = [r['overrides'][keys[0]] for r in rows if keys[0] in r['overrides']]
  if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    return keys[0]
  return None


def added_params_points(rows: list[dict]) -> list[tuple[str, int, float, float]]:
  """(setting, parameters added to the baseline, top-1 mean, std) per finished row, when a categorical
  sweep's settings differ in parameter count (e.g. attention kinds); [] otherwise."""
  base = next((r for r in rows if r['baseline'] and r['n'] and r['params']), None)
  pts = [r for r in rows if r['n'] and r['params']]
  if base is None or len(pts) != len([r for r in rows if r['n']]) or len({r['params'] for r in pts}) <= 2:
    return []
  return [(r['setting'], r['params'] - base['params'], r['top1_mean'], r['top1_std']) for r in pts]


def plot(rows: list[dict], manifest: dict, path: str, title: str) -> None:
  """Accuracy vs the swept number (error bars, parameters on a second axis); for categorical
  settings, accuracy vs added parameters where those differ (attention kinds), else a bar chart."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  rows = [{**r, 'top1_std': 0.0 if math.isnan(r['top1_std']) else r['top1_std']} for r in rows if r['n']]
  axis_key = numeric_axis(manifest, rows)
  base = next((r for r in rows if r['baseline']), None)
  fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
  if axis_key:
    pts = sorted((r for r in rows if axis_key in r['overrides']), key=lambda r: r['overrides'][axis_key])
    x = [r['overrides'][axis_key] for r in pts]
    ax.errorbar(x, [r['top1_mean'] for r in pts], yerr=[r['top1_std'] for r in pts], fmt='o-', capsize=4,
                color='C0', label='with SE: mean ± std over seeds')
    for xi, r in zip(x, pts):
      ax.plot([xi] * len(r['top1_seeds']), r['top1_seeds'], '.', color='C0', alpha=0.35)
    if base:
      label = f'no SE: {base["top1_mean"]:.2f} ± {base["top1_std"]:.2f}% (band: ± std)'
      ax.axhline(base['top1_mean'], color='0.3', ls='--', label=label)
      ax.axhspan(base['top1_mean'] - base['top1_std'], base['top1_mean'] + base['top1_std'], color='0.5',
                 alpha=0.15)
    short = axis_key.rsplit('.', 1)[-1]
    log = all(v > 0 for v in x)  # ratios and rates: log scale; a field with 0 or negatives: linear
    if log:
      ax.set_xscale('log', base=2)
    ax.set_xticks(x, [str(v) for v in x])
    ax.set_xlabel(('reduction ratio r' if short == 'reduction' else short) + (' (log scale)' if log else ''))
    ax.set_ylabel('test top-1 accuracy (%)')
    if all(r['params'] for r in pts):
      ax2 = ax.twinx()
      ax2.plot(x, [r['params'] for r in pts], 's:', color='C1', label='parameters with SE')
      if base and base['params']:
        ax2.axhline(base['params'], color='C1', ls=':', alpha=0.5, label='parameters without SE')
      ax2.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter('{x:,.0f}'))
      ax2.set_ylabel('parameters (count)', color='C1')
      ax2.tick_params(axis='y', colors='C1')
      handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
      ax.legend(handles, [h.get_label() for h in handles], loc='lower left', fontsize=8)
    else:
      ax.legend(loc='lower left', fontsize=8)
  elif added_params_points(rows):
    for setting, added, mean, std in added_params_points(rows):
      ax.errorbar([added], [mean], yerr=[std], fmt='o', capsize=4, color='0.4' if added == 0 else 'C0')
      ax.annotate(setting.rsplit('=', 1)[-1], (added, mean), textcoords='offset points', xytext=(5, 4),
                  fontsize=8)
    ax.set_xscale('symlog', linthresh=100)
    ax.xaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter('{x:,.0f}'))
    ax.set_xlabel('parameters added to the baseline (symlog scale)')
    ax.set_ylabel('test top-1 accuracy (%): mean ± std over seeds')
  else:
    x = range(len(rows))
    colors = ['0.6' if r['baseline'] else 'C0' for r in rows]
    ax.bar(x, [r['top1_mean'] for r in rows], yerr=[r['top1_std'] for r in rows], capsize=4, color=colors)
    for xi, r in zip(x, rows):
      ax.plot([xi] * len(r['top1_seeds']), r['top1_seeds'], '.', color='k', alpha=0.4)
    ax.set_xticks(list(x), [r['setting'] + ('\n(no SE)' if r['baseline'] else '') for r in rows], fontsize=8)
    lows = [v for r in rows for v in r['top1_seeds']] + [r['top1_mean'] - r['top1_std'] for r in rows]
    highs = [v for r in rows for v in r['top1_seeds']] + [r['top1_mean'] + r['top1_std'] for r in rows]
    span = max(max(highs) - min(lows), 0.5)
    ax.set_ylim(min(lows) - 0.5 * span, min(100.0, max(highs) + 0.3 * span))  # zoomed: not from 0
    ax.set_ylabel('test top-1 accuracy (%), axis zoomed')
    ax.set_xlabel('setting (bars: mean ± std over seeds; dots: seeds)')
  ax.grid(alpha=0.3)
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_report(sweep_dir: str, out_dir: str | None = None, title: str | None = None) -> list[dict]:
  manifest, members = load_members(sweep_dir)
  out_dir = out_dir or sweep_dir
  os.makedirs(out_dir, exist_ok=True)
  rows = summarize(manifest, members)
  unfinished = unfinished_lines(members)
  if unfinished:
    print(f'warning: {len(unfinished)} of {len(members)} members have no result and are left out of the '
          'means:\n  ' + '\n  '.join(unfinished), file=sys.stderr)
  title = title or f'Sweep {os.path.basename(manifest.get("sweep", "")).split(":")[0] or sweep_dir}'
  plot_name = None
  if any(r['n'] for r in rows):
    plot_name = 'report.png'
    plot(rows, manifest, os.path.join(out_dir, plot_name), title)
  write_markdown(rows, manifest, members, os.path.join(out_dir, 'report.md'), title, plot_name)
  write_csv(rows, os.path.join(out_dir, 'report.csv'))
  return rows


def define_flags() -> None:
  """Command-line flags, defined only when run as a program (tests import this module)."""
  flags.DEFINE_string('out', None, 'Where report.md, .csv and .png go (default: the sweep dir).')
  flags.DEFINE_string('title', None, 'Title of the report and the plot (default: from the sweep).')


def main(argv):
  if len(argv) != 2:
    raise app.UsageError('usage: python -m se_flax.tools.report SWEEP_DIR [--out=DIR] [--title=...]')
  from se_flax import cli
  with cli.clean_errors():
    rows = write_report(argv[1], FLAGS.out, FLAGS.title)
  out = FLAGS.out or argv[1]
  print(open(os.path.join(out, 'report.md')).read())
  print(f'wrote {os.path.join(out, "report.md")}, report.csv' + (', report.png' if any(r['n'] for r in rows)
                                                                   else ''), file=sys.stderr)


if __name__ == '__main__':
  define_flags()
  app.run(main)
