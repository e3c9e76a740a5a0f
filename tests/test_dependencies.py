"""Every third-party package that the repository's code imports is declared
in the extra of ``pyproject.toml`` that installs that code.

A package present only because something else pulls it in (or because it
was installed by hand) makes a fresh install fail; this test reads every
import with `ast` and maps it to its distribution with
`importlib.metadata.packages_distributions`.
"""

import ast
import importlib.metadata
import json
import pathlib
import re
import sys

import pytest

tomllib = pytest.importorskip('tomllib')  # Python 3.11+

ROOT = pathlib.Path(__file__).parent.parent
FIRST_PARTY = {'gsm_optax', 'examples', 'benchmarks', 'research', 'tests',
               'docs'}
# Which extra installs the code under each folder ('' = the core package).
EXTRA_OF_FOLDER = {'gsm_optax': '', 'examples': 'examples',
                   'benchmarks': 'examples', 'research': 'examples',
                   'tests': 'test', 'docs': 'docs'}
# Notebooks run in a Jupyter kernel, which the test extra installs.
NOTEBOOK_EXTRA = 'test'


def normalize(name):
  return re.sub(r'[-_.]+', '-', name).lower()


def requirement_name(requirement):
  """``'flax>=0.10.4'`` -> ``'flax'``; ``'gsm-optax[examples]'`` ->
  ``'gsm-optax[examples]'`` (a reference to another extra)."""
  match = re.match(r'\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?', requirement)
  return normalize(match.group(1)) + (match.group(2) or '')


def declared(pyproject, extra):
  """The distributions an extra installs, following ``pkg[other]`` to the
  other extras of this package."""
  project = pyproject['project']
  own = normalize(project['name'])
  names = {requirement_name(r) for r in project['dependencies']}
  todo = [extra] if extra else []
  seen = set()
  while todo:
    current = todo.pop()
    if current in seen:
      continue
    seen.add(current)
    for r in project['optional-dependencies'][current]:
      name = requirement_name(r)
      if name.startswith(own + '['):
        todo.extend(e.strip() for e in name[len(own) + 1:-1].split(','))
      else:
        names.add(name)
  return names


def local_modules():
  """Top-level names that resolve to files of the repository (test helpers
  imported by name, e.g. ``from reference import ...``)."""
  names = set(FIRST_PARTY)
  for folder in EXTRA_OF_FOLDER:
    names.update(p.stem for p in (ROOT / folder).glob('*.py'))
  return names


def imported_names(source):
  """Top-level module names imported anywhere in ``source`` (also inside
  functions: code that imports a package lazily still needs it)."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(a.name.split('.')[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module.split('.')[0])
  return names


def notebook_sources(path):
  cells = json.loads(path.read_text())['cells']
  code = (''.join(c['source']) for c in cells if c['cell_type'] == 'code')
  # IPython magics are not Python.
  return ['\n'.join(l for l in c.splitlines() if not l.lstrip().startswith(
      ('%', '!'))) for c in code]


def markdown_sources(path):
  """Code cells and python blocks of a docs page."""
  text = path.read_text()
  blocks = re.findall(r'```(?:\{code-cell\}[^\n]*|python)\n(.*?)```', text,
                      re.S)
  # A code cell's options (``:tags: [...]``) are not Python.
  return ['\n'.join(l for l in b.splitlines() if not re.match(r':\w+:', l))
          for b in blocks]


def code_by_extra():
  """(extra, where, source) for every piece of code in the repository."""
  for folder, extra in EXTRA_OF_FOLDER.items():
    for path in sorted((ROOT / folder).rglob('*')):
      if '_build' in path.parts or '_autosummary' in path.parts:
        continue
      where = str(path.relative_to(ROOT))
      if path.suffix == '.py':
        yield extra, where, path.read_text()
      elif path.suffix == '.ipynb':
        for source in notebook_sources(path):
          yield NOTEBOOK_EXTRA, where, source
      elif path.suffix == '.md' and folder == 'docs':
        for source in markdown_sources(path):
          yield extra, where, source
  for source in markdown_sources(ROOT / 'README.md'):
    yield 'examples', 'README.md', source


def missing_declarations(pyproject):
  """'where: imports X (distribution D), not declared in extra E' lines."""
  distributions = importlib.metadata.packages_distributions()
  local = local_modules()
  problems = set()
  for extra, where, source in code_by_extra():
    allowed = declared(pyproject, extra)
    for name in imported_names(source):
      if name in sys.stdlib_module_names or name in local:
        continue
      dists = {normalize(d) for d in distributions.get(name, [])}
      label = f"the '{extra}' extra" if extra else 'the core dependencies'
      if not dists:
        problems.add(f'{where}: imports {name!r}, which no installed '
                     f'distribution provides; declare it in {label}')
      elif not dists & allowed:
        problems.add(f'{where}: imports {name!r} (from {sorted(dists)}), '
                     f'which {label} does not declare')
  return sorted(problems)


def load_pyproject():
  with open(ROOT / 'pyproject.toml', 'rb') as f:
    return tomllib.load(f)


def test_every_import_is_declared_in_its_extra():
  problems = missing_declarations(load_pyproject())
  assert not problems, '\n'.join(problems)


def test_the_check_catches_an_undeclared_package():
  # The check itself: without grain in the examples extra, the example's
  # data module is reported.
  pyproject = load_pyproject()
  extras = pyproject['project']['optional-dependencies']
  extras['examples'] = [r for r in extras['examples']
                        if requirement_name(r) != 'grain']
  problems = missing_declarations(pyproject)
  assert any(p.startswith('examples/paper/data.py: imports \'grain\'')
             for p in problems), problems


def test_requirement_names():
  assert requirement_name('flax>=0.10.4') == 'flax'
  assert requirement_name('absl_py') == 'absl-py'
  assert requirement_name('gsm-optax[examples]') == 'gsm-optax[examples]'
  assert 'grain' in declared(load_pyproject(), 'test')  # through [examples]
  assert 'grain' not in declared(load_pyproject(), '')


def test_tfds_can_prepare_a_dataset(tmp_path):
  # What the AST check cannot see: a package imported by a dependency that
  # its own metadata does not require. tensorflow-datasets 4.9.x imports
  # `importlib_resources` unconditionally when it locates a builder's code
  # (the first step of download_and_prepare, so of `load_tfds`), but requires
  # it only on Python < 3.9; the examples extra declares it.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  builder = tfds.builder('fashion_mnist', data_dir=str(tmp_path))
  assert builder.code_path.is_file() and builder.code_path.suffix == '.py'
