"""python -m examples.structured_cnn.main [--flops-ratio 4] [--gsm-epochs 6] ..."""

import argparse
import dataclasses

from examples.mnist_nnx.train import load_fashion_mnist
from examples.structured_cnn import train


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  for field in dataclasses.fields(train.Config):
    parser.add_argument('--' + field.name.replace('_', '-'), type=field.type,
                        default=field.default)
  config = train.Config(**vars(parser.parse_args()))
  result = train.run(config, load_fashion_mnist('train'),
                     load_fashion_mnist('test'))
  info, ms = result['info'], result['milliseconds']
  print(f"\ndense {result['dense_accuracy']:.2%}, before the prune "
        f"{result['accuracy_before_prune']:.2%}, pruned and slimmed (no "
        f"fine-tune) {result['pruned_accuracy']:.2%}\n\n{result['report']}\n")
  print(f'slim model: {info.params[1]:,.0f} of {info.params[0]:,.0f} '
        f'parameters, {info.flops[1]:,.0f} of {info.flops[0]:,.0f} FLOPs '
        f"({info.flops[0] / info.flops[1]:.2f}x fewer); exported to "
        f"{result['artefact']} ({result['artefact_bytes']:,} bytes)")
  print(f"forward pass at batch 256 (median ms): dense {ms['dense']:.2f}, "
        f"slim {ms['slim']:.2f} ({ms['dense'] / ms['slim']:.2f}x), "
        f"exported artefact {ms['exported']:.2f}")


if __name__ == '__main__':
  main()
