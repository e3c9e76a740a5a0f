"""python -m examples.mnist_nnx.main [--ratio 60] [--gsm-epochs 20] ..."""

import argparse
import dataclasses

from examples.mnist_nnx import train


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  for field in dataclasses.fields(train.Config):
    parser.add_argument('--' + field.name.replace('_', '-'), type=field.type,
                        default=field.default)
  config = train.Config(**vars(parser.parse_args()))
  result = train.run(config, train.load_fashion_mnist('train'),
                     train.load_fashion_mnist('test'))
  if not result['prune_check'].ok:
    print(f"\nwarning: {result['prune_check'].message}")
  print(f"\ndense {result['dense_accuracy']:.2%}, before the prune "
        f"{result['accuracy_before_prune']:.2%}, pruned (no fine-tune) "
        f"{result['pruned_accuracy']:.2%}\n\n{result['report']}\n\n"
        f"saved {result['sparse_file']} ({result['sparse_file_bytes']:,} "
        'bytes), loaded back as sparse kernels: its outputs equal the pruned '
        "model's")


if __name__ == '__main__':
  main()
