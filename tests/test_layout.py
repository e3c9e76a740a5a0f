"""The repository keeps the form it promises: a short README, no import
cycle, no dates or timings in the library, short modules, every public name
exported once."""

import ast
import os
import pathlib
import re

import gsm_optax

ROOT = pathlib.Path(__file__).parent.parent
PACKAGES = ('gsm_optax', 'examples', 'benchmarks', 'research', 'tests', 'docs')


def python_modules():
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      if '_build' not in path.parts and '_autosummary' not in path.parts:
        yield path


def module_name(path):
  name = '.'.join(path.relative_to(ROOT).with_suffix('').parts)
  return name[:-len('.__init__')] if name.endswith('.__init__') else name


def test_readme_is_a_front_door():
  lines = (ROOT / 'README.md').read_text().splitlines()
  assert len(lines) <= 150
  head = '\n'.join(lines[:20])
  assert './demo.sh' in head and 'python3 -m pytest' in head


def test_no_import_cycle():
  modules = {module_name(p): p for p in python_modules()}
  graph = {}
  for name, path in modules.items():
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        deps.update(a.name for a in node.names)
      elif isinstance(node, ast.ImportFrom) and node.module:
        deps.add(node.module)
        deps.update(f'{node.module}.{a.name}' for a in node.names)
    graph[name] = {d for d in deps if d in modules and d != name}
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = 'open'
    stack.append(node)
    for dep in sorted(graph[node]):
      if state.get(dep) == 'open':
        cycles.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        visit(dep, stack)
    stack.pop()
    state[node] = 'done'

  for name in sorted(graph):
    if name not in state:
      visit(name, [])
  assert not cycles


def test_library_names_no_date_machine_or_timing():
  pattern = re.compile(r'20\d\d-[01]\d-[0-3]\d|\d ?(µs|us|ms)\b|EPYC|'
                       r'jax 0\.\d+\.\d')
  found = [f'{p.relative_to(ROOT)}:{i}' for p in (ROOT / 'gsm_optax').rglob(
      '*.py') for i, line in enumerate(p.read_text().splitlines(), 1)
           if pattern.search(line)]
  assert not found


def test_long_modules_say_why():
  for path in python_modules():
    text = path.read_text()
    if len(text.splitlines()) > 300:
      doc = ast.get_docstring(ast.parse(text)) or ''
      assert 'long because' in doc.lower(), (
          f'{path.relative_to(ROOT)} has over 300 lines: split it or say why '
          'in its docstring ("Long because ...").')


def test_public_names_come_from_private_modules_once():
  assert len(set(gsm_optax.__all__)) == len(gsm_optax.__all__)
  for name in gsm_optax.__all__:
    obj = getattr(gsm_optax, name)
    module = getattr(obj, '__module__', 'gsm_optax._src')
    assert module.startswith('gsm_optax._src') or name == 'SELECTION_METHODS'


def test_version_has_one_source():
  pyproject = (ROOT / 'pyproject.toml').read_text()
  assert 'version = { attr = "gsm_optax.__version__" }' in pyproject
  assert not re.search(r'^version\s*=\s*"', pyproject, re.M)
  assert re.fullmatch(r'\d+\.\d+\.\d+', gsm_optax.__version__)
  assert os.path.exists(ROOT / 'gsm_optax' / 'py.typed')
