"""The language-model example: its corpus reader, its training (it learns,
and resumes bit for bit), on small synthetic text."""

import dataclasses

import flax.nnx as nnx
import jax
import numpy as np

from examples.lm import data
from examples.lm import train

READER_OUTPUT = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void.

Genesis 2

  1 Thus the heavens and the earth were finished.
"""


def test_chapters_drop_headings_and_verse_numbers():
  assert data.chapters(READER_OUTPUT) == [
      'In the beginning God created the heaven and the earth.\n'
      'And the earth was without form, and void.\n',
      'Thus the heavens and the earth were finished.\n']


def test_split_by_chapter_index():
  texts = [f'{i}\n' for i in range(40)]
  splits = data.split(texts)
  assert splits['validation'].tobytes() == b'18\n38\n'
  assert splits['test'].tobytes() == b'19\n39\n'
  assert len(splits['train']) == sum(len(t) for t in texts) - 12


def test_missing_corpus_names_the_package(monkeypatch):
  monkeypatch.setattr(data.shutil, 'which', lambda name: None)
  try:
    data.load_kjv()
  except FileNotFoundError as e:
    assert 'apt-get install bible-kjv' in str(e)
  else:
    raise AssertionError('load_kjv without the corpus raised nothing')


def test_ngram_baselines_count_what_they_should():
  tokens = np.frombuffer(b'abababab', np.uint8)
  with np.errstate(divide='ignore'):  # unseen bytes: log 0, never read
    assert data.ngram_perplexity(tokens, tokens, 2, smoothing=0.0) == 1.0
    assert abs(data.ngram_perplexity(tokens, tokens, 1, smoothing=0.0) -
               2.0) < 1e-9


def config(tmp_path, **kw):
  return train.Config(width=32, layers=2, heads=2, seq_len=32, batch_size=16,
                      steps=kw.pop('steps', 30), warmup_steps=5,
                      checkpoint_every=10, workdir=str(tmp_path), **kw)


def splits():
  text = data.synthetic(60_000, 0)
  return {'train': text[:50_000], 'validation': text[50_000:55_000],
          'test': text[55_000:]}


def test_it_learns_below_the_unigram_baseline(tmp_path):
  result = train.train(config(tmp_path, steps=150, learning_rate=1e-2),
                       splits())
  assert result['test_perplexity'] < 0.8 * result['test_unigram_perplexity']
  assert (tmp_path / 'result.json').exists()


def test_resuming_gives_the_uninterrupted_run_bit_for_bit(tmp_path):
  once = train.train(config(tmp_path / 'once', steps=20), splits())
  cfg = config(tmp_path / 'twice', steps=20)
  first = train.train(cfg, splits(), stop_at=10)
  assert first['steps'] == 10 and 'test_perplexity' not in first
  resumed = train.train(cfg, splits())
  for a, b in zip(jax.tree.leaves(nnx.state(once['model'])),
                  jax.tree.leaves(nnx.state(resumed['model']))):
    np.testing.assert_array_equal(a, b)
  assert resumed['test_perplexity'] == once['test_perplexity']
  assert dataclasses.asdict(cfg)['steps'] == 20
