"""Sphinx configuration: MyST pages, executed getting-started, autosummary API.

The build fails (``-W``) on any warning, and `check_public_api` fails it when
a name in ``gsm_optax.__all__`` has no entry in the API reference.
"""

import os
import sys

sys.path.insert(0, os.path.abspath('..'))

import gsm_optax  # pylint: disable=wrong-import-position

project = 'gsm_optax'
author = 'The gsm_optax authors'
copyright = '2026, The gsm_optax authors'  # pylint: disable=redefined-builtin
release = version = gsm_optax.__version__

extensions = [
    'myst_nb',
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
]
# .rst first: autosummary writes its stubs with the first suffix.
source_suffix = {'.rst': 'restructuredtext', '.md': 'myst-nb',
                 '.ipynb': 'myst-nb'}
exclude_patterns = ['_build', 'README.md']
myst_enable_extensions = ['dollarmath', 'colon_fence']
myst_heading_anchors = 3
nb_execution_mode = 'force'
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_render_markdown_format = 'myst'  # tables in Markdown outputs
autosummary_generate = True
autodoc_typehints = 'description'
autodoc_member_order = 'bysource'
napoleon_google_docstring = True
html_theme = 'furo'
html_title = f'gsm_optax {release}'
suppress_warnings = ['mystnb.unknown_mime_type']


def check_public_api(app, exception):
  """Fails the build when a public name is missing from the API reference."""
  if exception is not None:
    return
  documented = set(app.env.domaindata['py']['objects'])
  missing = [name for name in gsm_optax.__all__
             if f'gsm_optax.{name}' not in documented]
  if missing:
    raise RuntimeError(
        'docs/api.md documents no entry for gsm_optax.'
        + ', gsm_optax.'.join(missing) + ': add each to its autosummary list.')


def setup(app):
  app.connect('build-finished', check_public_api)
