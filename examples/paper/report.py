"""The run's report: the summary table and the per-layer density figure."""


def format_report(summary, report) -> str:
  def pct(x):
    return 'n/a' if x is None else f'{100 * x:.2f}%'
  return '\n'.join([
      '',
      f"== {summary['model']} on {summary['dataset']}, "
      f"{summary['pruning']} at {summary['ratio']:g}x ==",
      f"dense accuracy:                 {pct(summary['dense_accuracy'])}",
      f"accuracy before the prune:      "
      f"{pct(summary['accuracy_before_prune'])}",
      f"pruned accuracy (no fine-tune): {pct(summary['pruned_accuracy'])}",
      *([f"warning: {summary['prune_warning']}"]
        if summary.get('prune_warning') else []),
      f"kept {summary['kept_weights']:,} of {summary['prunable_weights']:,} "
      f"prunable weights: {summary['compression']:.1f}x",
      *([f"lottery tickets retrained from init: {summary['pruning']} "
         f"{pct(summary['ticket_accuracy'])}, magnitude "
         f"{pct(summary['ticket_magnitude_accuracy'])}"]
        if summary['ticket_accuracy'] is not None else []),
      *deploy_lines(summary.get('deploy')),
      *slim_lines(summary.get('slim')),
      '', str(report)])


def deploy_lines(deploy):
  """The pruned model's files and its forward pass, dense and sparse."""
  if not deploy:
    return []
  inference = deploy['inference']
  return [
      f"pruned model: {deploy['sparse_file']} {deploy['sparse_file_bytes']:,}"
      f" bytes as a deflated file, against {deploy['dense_array_bytes']:,} "
      'bytes of dense arrays '
      f"({deploy['dense_array_bytes'] / deploy['sparse_file_bytes']:.0f}"
      f"x smaller; orbax snapshot 'pruned' {deploy['pruned_snapshot_bytes']:,}"
      ' bytes)',
      f"forward pass, batch {inference['batch']} (median of "
      f"{inference['repeats']}): dense {inference['dense_seconds'] * 1e3:.2f}"
      f" ms, sparse {inference['sparse_seconds'] * 1e3:.2f} ms "
      f"({inference['speedup']:.1f}x)"]


def slim_lines(slim):
  """The structured prune's slim model: its size and speed."""
  if not slim:
    return []
  (pb, pa), (fb, fa) = slim['params'], slim['flops']
  inference = slim['inference']
  widths = ', '.join(f'{name} {kept}/{size}' for name, size, kept in
                     slim['channels'])
  return [
      f'slim model: {pa:,.0f} of {pb:,.0f} parameters ({pb / pa:.2f}x fewer), '
      f'{fa:,.0f} of {fb:,.0f} FLOPs ({fb / fa:.2f}x fewer); widths: {widths}',
      f"exported ({slim['artefact']}, {slim['artefact_bytes']:,} bytes); "
      f"forward pass, batch {inference['batch']}: dense "
      f"{inference['dense_seconds'] * 1e3:.2f} ms, slim "
      f"{inference['slim_seconds'] * 1e3:.2f} ms ({inference['speedup']:.2f}x)"]


def plot_density(report, path, title):
  """Bar chart of the density of every prunable layer."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  rows = [l for l in report.leaves if l.prunable]
  fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(rows) + 2), 3.5))
  ax.bar(range(len(rows)), [100 * l.density for l in rows])
  ax.set_xticks(range(len(rows)))
  ax.set_xticklabels([l.path.replace("']['", '.').strip("[]'")
                      for l in rows], rotation=60, ha='right', fontsize=7)
  ax.set_ylabel('density (% weights kept)')
  ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
