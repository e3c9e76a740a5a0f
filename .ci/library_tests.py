"""Prints the test files that test the library alone, one per line.

A test file tests the library alone when neither it nor a test helper it
imports by name (``from test_native import ...``) imports the examples, the
benchmarks or the research folders. `.ci/run` runs these against the built
wheel, from outside the source tree, so no file is left out by hand.
"""

import ast
import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parent.parent / 'tests'
OUTSIDE_LIBRARY = ('examples', 'benchmarks', 'research')


def imports(path):
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names.update(a.name.split('.')[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module.split('.')[0])
  return names


def library_only(path, seen=()):
  names = imports(path)
  if names & set(OUTSIDE_LIBRARY):
    return False
  helpers = [TESTS / f'{n}.py' for n in sorted(names)
             if (TESTS / f'{n}.py').exists() and n not in seen]
  return all(library_only(h, seen + (path.stem,)) for h in helpers)


def main():
  files = [p for p in sorted(TESTS.glob('test_*.py')) if library_only(p)]
  if not files:
    sys.exit('no library test file found')
  print('\n'.join(str(p) for p in files))


if __name__ == '__main__':
  main()
