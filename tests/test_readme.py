"""The README's quickstart runs and prunes to the ratio it asks for, and its
benchmark tables are those of the committed results."""

import contextlib
import io
import pathlib
import re

import pytest

from benchmarks.accuracy import report
from benchmarks.accuracy import results as results_lib

ROOT = pathlib.Path(__file__).parent.parent


def test_readme_quickstart_runs():
  readme = (ROOT / 'README.md').read_text()
  code = re.search(r'```python\n(.*?)```', readme, re.S).group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  assert 'compression (prunable weights): 60.0x' in out.getvalue()
  first = out.getvalue().splitlines()[0].split()
  assert int(first[0]) == 238_200 // 60


@pytest.mark.parametrize('model, axis', [('lenet300', 'params'),
                                         ('lenet300', 'flops')])
def test_readme_quotes_the_benchmark_tables(model, axis):
  # A rerun that changes a result must change the README's quote too.
  readme = (ROOT / 'README.md').read_text()
  results = results_lib.load(str(ROOT / 'benchmarks' / 'results' / 'accuracy'))
  table = '\n'.join(report.accuracy_table_lines(results, model, with_n=False,
                                                axis=axis))
  assert table in readme, f'README.md should quote this {model} table:\n{table}'
