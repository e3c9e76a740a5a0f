"""Every code block of the README and the docs runs.

Pages that MyST-NB executes (``file_format: mystnb``) run in the docs
build; here, the ``python`` blocks of every other page run, in order, in one
namespace per page, and each ``python -m examples.paper.main`` command in a
``bash`` block is checked against the flags and config fields it names.
"""

import contextlib
import importlib.util
import io
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).parent.parent
PAGES = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


def blocks(path, language):
  return re.findall(rf'^```{language}\n(.*?)^```', path.read_text(),
                    re.S | re.M)


def executed_by_the_docs_build(path):
  return 'file_format: mystnb' in path.read_text().split('\n---', 1)[0]


def opening_fences(path):
  """The info string of every block's opening fence (```python -> python)."""
  infos, inside = [], False
  for line in path.read_text().splitlines():
    if line.startswith('```'):
      if not inside:
        infos.append(line[3:].strip())
      inside = not inside
  return infos


def test_pages_have_no_block_without_a_language():
  # A block with no language is neither run nor checked: say what it is
  # (```text for pseudo-code).
  for path in PAGES:
    assert '' not in opening_fences(path), path


@pytest.mark.parametrize('page', [p.name for p in PAGES if blocks(p, 'python')
                                  and not executed_by_the_docs_build(p)])
def test_python_blocks_run(page, tmp_path, monkeypatch):
  path = next(p for p in PAGES if p.name == page)
  monkeypatch.chdir(tmp_path)  # the blocks may write files
  namespace = {}
  with contextlib.redirect_stdout(io.StringIO()):
    for i, code in enumerate(blocks(path, 'python')):
      exec(compile(code, f'{page}, block {i + 1}', 'exec'), namespace)  # pylint: disable=exec-used


def main_commands():
  """Each ``python -m examples.paper.main`` command of a bash block, as
  arguments (line continuations joined, shell loops around it ignored)."""
  for path in PAGES:
    for block in blocks(path, 'bash'):
      text = block.replace('\\\n', ' ')
      for line in text.splitlines():
        if 'python -m examples.paper.main' in line:
          command = line.split('python -m examples.paper.main', 1)[1]
          command = re.split(r'[&;]|"$', command.strip())[0]
          yield path.name, shlex.split(command)


def test_docs_commands_name_real_flags_and_config_fields():
  from absl import flags  # pylint: disable=import-outside-toplevel

  from examples.paper import main  # noqa: F401  # pylint: disable=import-outside-toplevel
  commands = list(main_commands())
  assert commands  # the sharding page has three
  for page, args in commands:
    config_file = args[args.index('--config') + 1]
    spec = importlib.util.spec_from_file_location('config', ROOT / config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for arg in args:
      if not arg.startswith('--'):
        continue
      name = arg[2:].split('=', 1)[0]
      if name.startswith('config.'):
        field = config
        for part in name.split('.')[1:]:
          assert part in field, f'{page}: {arg}: no config field {name}'
          field = field[part]
      else:
        assert name in flags.FLAGS, f'{page}: {arg}: no such flag'
