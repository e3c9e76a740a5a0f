"""Prints the test files to run against the built wheel, one per line.

Most of the library's tests run once, from the source tree (the README's
test command); against the wheel they would only repeat it. What the wheel
can get wrong is what the source tree cannot show: a file left out of it.
`wheel_files.py` checks that the wheel holds every file of the package, and
these tests exercise the modules that read a non-Python file of the package
at run time (a module naming ``__file__``: the native kernels' C++ sources),
from outside the source tree. A test file is chosen when it tests the
library alone (neither it nor a test helper it imports by name imports the
examples, the benchmarks or the research folders) and imports such a
module, so no file is left out by hand.
"""

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TESTS = ROOT / 'tests'
OUTSIDE_LIBRARY = ('examples', 'benchmarks', 'research')


def imports(path):
  """The modules ``path`` imports: ``a.b`` for ``import a.b`` and
  ``from a import b`` alike (``b`` may be a module)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      names.update(f'{node.module}.{a.name}' for a in node.names)
  return names


def library_only(path, seen=()):
  names = imports(path)
  if {n.split('.')[0] for n in names} & set(OUTSIDE_LIBRARY):
    return False
  helpers = [TESTS / f'{n}.py' for n in sorted(names)
             if (TESTS / f'{n}.py').exists() and n not in seen]
  return all(library_only(h, seen + (path.stem,)) for h in helpers)


def reading_package_files():
  """The dotted names of the library's modules that read a file beside
  them (they name ``__file__``)."""
  return {'.'.join(p.relative_to(ROOT).with_suffix('').parts)
          for p in (ROOT / 'gsm_optax').rglob('*.py')
          if '__file__' in p.read_text()}


def main():
  readers = reading_package_files()
  files = [p for p in sorted(TESTS.glob('test_*.py'))
           if library_only(p) and imports(p) & readers]
  if not readers or not files:
    sys.exit(f'no test of a module that reads package files ({readers})')
  print('\n'.join(str(p) for p in files))


if __name__ == '__main__':
  main()
