"""The plan as a list of runs: the comparison's, the learning-rate
sweeps' and the chosen hyperparameters' (`methods.Choice`), each a `Run`
that `run.run_each` trains (or skips, where its result is there)."""

from typing import Any, Mapping, NamedTuple, Optional

from benchmarks.accuracy import plan as plan_lib
from benchmarks.accuracy import results as results_lib
from benchmarks.accuracy.methods import METHODS


class Run(NamedTuple):
  """One training run of the benchmark: what it trains and where it goes.

  ``dense``: where its dense model comes from, ``(workdir, what, first
  run)`` as `dense_models.dense_source` takes them, or None when this run
  trains it; ``overrides``: config fields beyond the method's record (a
  `methods.Choice`'s value); ``fields``: extra fields of its result.
  """
  title: str
  model: str
  method: str
  ratio: float
  seed: int
  learning_rate: float
  path: str
  workdir: str
  dense: Optional[tuple]
  holdout_fraction: float = 0.0
  lottery: bool = False
  overrides: Mapping[str, Any] = {}
  fields: Mapping[str, Any] = {}


def chosen(method, results_dir, quick=False, values=None):
  """``method``'s overrides: its `methods.Choice`'s best value on
  validation (over ``values``, default the choice's own), or none."""
  c = METHODS[method].choice
  if c is None:
    return {}
  return {f'gsm.{c.field}': results_lib.chosen_value(
      results_dir, method, values or c.sweep_values(quick))}


def comparison_runs(plan, results_dir, runs_dir, seeds=None, ratios=None,
                    methods=None, lottery=True, quick=False,
                    lr_from=None, values=None):
  """Every (model, seed, ratio, method) of ``plan``, in that order.

  A method runs at its own ratios (`plan.method_ratios`). ``seeds``,
  ``ratios`` and ``methods`` (optional; default every record) restrict the
  plan to a slice; ``lottery=False`` skips the lottery tickets (their
  result fields stay empty). The dense model of a seed is trained by the GSM run at the
  plan's first ratio (`plan.dense_workdir`), so a slice of later ratios
  needs that run first. At a ratio swept in a method's sweeps
  (`plan.tuning_for`) it trains with its best lr there
  (`results.comparison_learning_rate`); a result trained with another lr
  is run again, in a workdir named by its lr. ``lr_from={'gsm_smoothed':
  'gsm'}`` gives a method another's lr instead of its own sweep's
  (recorded in the result); ``values``: ``{method: values}`` of a
  `methods.Choice` sweep, if not its own.
  """
  methods = tuple(METHODS) if methods is None else methods
  lr_from = lr_from or {}
  values = values or {}
  runs = []
  for model, budget in plan.items():
    own = {m: plan_lib.method_ratios(m, model, budget, quick)
           for m in methods}
    model_ratios = [r for r in dict.fromkeys(r for m in methods
                                             for r in own[m])
                    if ratios is None or r in ratios]
    lrs = {(ratio, method): results_lib.comparison_learning_rate(
        plan_lib.tuning_for(lr_from.get(method, method), quick), results_dir,
        model, ratio, lr_from.get(method, method))
           for method in methods for ratio in own[method]
           if ratio in model_ratios}  # only the sweeps of the ratios run
    overrides = {m: chosen(m, results_dir, quick, values.get(m))
                 for m in methods}
    default_lr = plan_lib.default_learning_rate(model)
    dense_lr = results_lib.comparison_learning_rate(
        plan_lib.tuning_for('gsm', quick), results_dir, model,
        budget['ratios'][0], 'gsm')
    for seed in budget['seeds'] if seeds is None else seeds:
      dense_dir = plan_lib.dense_workdir(runs_dir, model, seed, budget,
                                         dense_lr, default_lr)
      for ratio in model_ratios:
        for method in (m for m in methods if ratio in own[m]):
          lr = lrs[(ratio, method)]
          workdir = plan_lib.run_workdir(runs_dir, model, seed, method, ratio,
                                         lr, default_lr)
          runs.append(Run(
              f'{model} {method} {ratio:g}x seed {seed} lr {lr:g}', model,
              method, ratio, seed, lr,
              plan_lib.result_path(results_dir, model, method, ratio, seed),
              workdir, None if workdir == dense_dir else (
                  dense_dir, f'{model} seed {seed}',
                  f"ratio {budget['ratios'][0]:g} of this seed"),
              lottery=lottery, overrides=overrides.get(method, {}),
              fields=({'learning_rate_of': lr_from[method]}
                      if method in lr_from else {})))
  return runs


def tuning_runs(plan, results_dir, runs_dir, methods=None,
                learning_rates=None, ratios=None, quick=False, values=None):
  """Every point of the learning-rate sweeps of ``methods`` (on validation).

  Each sweep of a method's ``tuning[model]`` (a ratio, a seed and its
  learning rates) writes ``<results_dir>/tuning/<model>_r<ratio>_<method>
  _lr<lr>.json``. ``learning_rates`` and ``ratios`` (optional) restrict the
  sweeps to those of their points. A sweep's dense model is trained by the
  run `plan.sweep_dense_run` names (GSM's at its first lr there), so a
  slice of other points needs that run first. A method with a
  `methods.Choice` sweeps at its chosen value (``values``: see
  `comparison_runs`).
  """
  runs = []
  for method in tuple(METHODS) if methods is None else methods:
    overrides = chosen(method, results_dir, quick, (values or {}).get(method))
    for model, sweeps in plan_lib.tuning_for(method, quick).items():
      if model not in plan:
        continue
      for sweep in sweeps:
        ratio = sweep['ratio']
        if ratios is not None and ratio not in ratios:
          continue
        first, first_lr = plan_lib.sweep_dense_run(model, ratio, quick)
        dense_dir = plan_lib.sweep_workdir(runs_dir, model, ratio, first,
                                           first_lr)
        for lr in sweep['learning_rates']:
          if learning_rates is not None and lr not in learning_rates:
            continue
          workdir = plan_lib.sweep_workdir(runs_dir, model, ratio, method, lr)
          runs.append(Run(
              f'tuning {model} {method} {ratio:g}x lr {lr:g}', model, method,
              ratio, sweep['seed'], lr,
              plan_lib.tuning_path(results_dir, model, method, ratio, lr),
              workdir, None if workdir == dense_dir else (
                  dense_dir, f'{model} tuning at {ratio:g}x',
                  f'its {METHODS[first].label} run at lr {first_lr:g}'),
              sweep['holdout_fraction'], overrides=overrides))
  # The runs that train a sweep's dense model go first.
  return sorted(runs, key=lambda r: r.dense is not None)


def choice_run(method, value, results_dir, runs_dir, quick=False):
  """The run of ``method``'s `methods.Choice` sweep at ``value``: on
  validation, from the dense model of the lr sweeps at its ratio."""
  c = METHODS[method].choice
  first, first_lr = plan_lib.sweep_dense_run(c.model, c.ratio, quick)
  return Run(
      f'{c.name} sweep {c.model} {c.ratio:g}x {c.name} {value:g}', c.model,
      method, c.ratio, c.seed, c.learning_rate,
      plan_lib.choice_path(results_dir, method, value),
      plan_lib.choice_workdir(runs_dir, method, value),
      (plan_lib.sweep_workdir(runs_dir, c.model, c.ratio, first, first_lr),
       f'{c.model} {c.name} sweep',
       f'the {METHODS[first].label} sweep at {c.ratio:g}x, lr {first_lr:g},'),
      c.holdout_fraction, overrides={f'gsm.{c.field}': value})
