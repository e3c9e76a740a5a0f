#!/usr/bin/env bash
# The main job: LeNet-300-100, GSM at 60x on Fashion-MNIST, end to end.
# Installs gsm-optax with its example extras and, on Debian/Ubuntu, the
# dataset-fashion-mnist package when no data is present (elsewhere TFDS
# downloads Fashion-MNIST). Extra arguments go to examples.paper.main.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q ".[examples]"
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
data_dir=()
[ -d /usr/share/datasets/fashion-mnist ] || data_dir=(--config.data_dir=)
# The recommended recipe: the smoothed ranking (docs: FAQ, "The final prune
# costs a lot of accuracy"); --config.gsm.score_decay=0 runs the paper's rule.
exec python3 -m examples.paper.main --config examples/paper/configs/lenet300_fmnist.py \
  --workdir "${WORKDIR:-runs/demo}" "${data_dir[@]}" --config.gsm.score_decay=0.9 "$@"
