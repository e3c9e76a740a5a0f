"""The corpus: the King James Version of the Bible, from Debian's packages.

``apt-get install bible-kjv`` (with ``bible-kjv-text``) installs the text
and its reader, ``bible``; nothing is downloaded at run time. The KJV
(1611) is in the public domain (Debian's copyright file: "The copyright for
the King James Version text of the Bible is expired"); it is 4.3 MB of
English prose in 1,189 chapters and 31,102 verses. Tokens are bytes
(vocabulary 256; the text is ASCII). The split is by chapter: chapter ``i``
(in canonical order) goes to validation if ``i % 20 == 18``, to test if
``i % 20 == 19``, else to training (90 / 5 / 5 %), so every book is in
every split.
"""

import shutil
import subprocess

import numpy as np

READER = 'bible'  # Debian's bible-kjv
SPLITS = ('train', 'validation', 'test')


def chapters(text: str) -> list[str]:
  """The chapters of the reader's output, each its verses joined by
  newlines (book and chapter headings and verse numbers dropped)."""
  out, verses = [], []
  for line in text.splitlines():
    stripped = line.strip()
    if not stripped:
      continue
    number, _, verse = stripped.partition(' ')
    if line.startswith(' ') and number.isdigit():
      verses.append(verse)
    else:  # a heading such as 'Genesis 1': a new chapter
      if verses:
        out.append('\n'.join(verses) + '\n')
      verses = []
  if verses:
    out.append('\n'.join(verses) + '\n')
  return out


def split(chapter_texts: list[str]) -> dict[str, np.ndarray]:
  """Byte tokens (uint8) of each split, by chapter index (module doc)."""
  parts = {name: [] for name in SPLITS}
  for i, chapter in enumerate(chapter_texts):
    name = {18: 'validation', 19: 'test'}.get(i % 20, 'train')
    parts[name].append(chapter)
  return {name: np.frombuffer(''.join(texts).encode('ascii'), np.uint8)
          for name, texts in parts.items()}


def load_kjv() -> dict[str, np.ndarray]:
  """The three splits of the KJV as byte tokens.

  Raises:
    FileNotFoundError: the corpus is not installed, with the command that
      installs it.
  """
  if shutil.which(READER) is None:
    raise FileNotFoundError(
        'The corpus is the King James Version from Debian: install it with '
        '`apt-get install bible-kjv` (it brings bible-kjv-text), then run '
        'again. Nothing is downloaded at run time.')
  text = subprocess.run([READER, '-l', '100000', 'Gen1:1-Rev22:21'],
                        check=True, capture_output=True, text=True).stdout
  return split(chapters(text))


def synthetic(num_bytes: int, seed: int) -> np.ndarray:
  """Learnable byte text for tests: words from a small random vocabulary,
  the next word chosen by a sparse random Markov chain."""
  rng = np.random.default_rng(seed)
  words = [''.join(rng.choice(list('abcdefghij'), size=rng.integers(2, 6)))
           for _ in range(40)]
  chain = np.random.default_rng(123).random((40, 40)) < 0.1
  out, word, size = [], 0, 0
  while size < num_bytes:
    out.append(words[word])
    size += len(words[word]) + 1
    nexts = np.flatnonzero(chain[word])
    word = int(rng.choice(nexts)) if len(nexts) else int(rng.integers(40))
  return np.frombuffer(' '.join(out).encode()[:num_bytes], np.uint8)


def windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
  """Non-overlapping segments of ``seq_len + 1`` tokens (inputs and the
  next token of each), the papers' evaluation protocol; the tail that does
  not fill a segment is dropped."""
  n = (len(tokens) - 1) // seq_len
  starts = np.arange(n) * seq_len
  return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(
      np.int32)


def sample(tokens: np.ndarray, seq_len: int, batch_size: int,
           rng: np.random.Generator) -> np.ndarray:
  """A training batch: ``batch_size`` segments at random offsets."""
  starts = rng.integers(0, len(tokens) - seq_len - 1, size=batch_size)
  return np.stack([tokens[s:s + seq_len + 1] for s in starts]).astype(
      np.int32)


def ngram_perplexity(train: np.ndarray, test: np.ndarray, order: int,
                     smoothing: float = 0.1) -> float:
  """The perplexity on ``test`` of a byte unigram (``order=1``) or bigram
  (``order=2``) model counted on ``train``, add-``smoothing``: the trivial
  baselines a language model must beat."""
  if order == 1:
    counts = np.bincount(train, minlength=256) + smoothing
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[test].mean()))
  counts = np.zeros((256, 256)) + smoothing
  np.add.at(counts, (train[:-1], train[1:]), 1)
  logp = np.log(counts / counts.sum(1, keepdims=True))
  return float(np.exp(-logp[test[:-1], test[1:]].mean()))
