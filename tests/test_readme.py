"""The README's quickstart runs and prunes to the ratio it asks for."""

import contextlib
import io
import pathlib
import re


def test_readme_quickstart_runs():
  readme = (pathlib.Path(__file__).parent.parent / 'README.md').read_text()
  code = re.search(r'```python\n(.*?)```', readme, re.S).group(1)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(code, 'README.md', 'exec'), {})  # pylint: disable=exec-used
  assert 'compression (prunable weights): 60.0x' in out.getvalue()
  first = out.getvalue().splitlines()[0].split()
  assert int(first[0]) == 238_200 // 60
