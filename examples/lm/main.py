"""python -m examples.lm.main [--steps 3000] [--width 128] [--workdir runs/lm] ...

Trains the small GPT on the King James Version (Debian's bible-kjv),
resuming from the workdir's last checkpoint, and prints the validation and
test perplexity beside the unigram and bigram baselines.
"""

import argparse
import dataclasses

from examples.lm import data
from examples.lm import train


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  for field in dataclasses.fields(train.Config):
    parser.add_argument('--' + field.name.replace('_', '-'), type=field.type,
                        default=field.default)
  config = train.Config(**vars(parser.parse_args()))
  splits = data.load_kjv()
  print({k: len(v) for k, v in splits.items()}, 'bytes')
  result = train.train(config, splits)
  for name in ('validation', 'test'):
    print(f"{name}: perplexity {result[f'{name}_perplexity']:.3f} (bytes; "
          f"unigram {result[f'{name}_unigram_perplexity']:.2f}, bigram "
          f"{result[f'{name}_bigram_perplexity']:.2f})")


if __name__ == '__main__':
  main()
