"""Checks that a wheel holds every file git tracks under ``gsm_optax/``.

Usage: python .ci/wheel_files.py dist/gsm_optax-*.whl
"""

import subprocess
import sys
import zipfile


def main(wheel):
  tracked = set(subprocess.run(
      ['git', 'ls-files', 'gsm_optax'], check=True, capture_output=True,
      text=True).stdout.split())
  with zipfile.ZipFile(wheel) as archive:
    packed = {n for n in archive.namelist() if n.startswith('gsm_optax/')}
  missing = sorted(tracked - packed)
  if missing:
    sys.exit(f'{wheel} lacks {len(missing)} of the package\'s files: '
             f'{missing}; add them to [tool.setuptools.package-data] in '
             'pyproject.toml.')
  print(f'{wheel}: all {len(tracked)} files of gsm_optax/')


if __name__ == '__main__':
  main(sys.argv[1])
