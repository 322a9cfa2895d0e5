#!/bin/sh
# The pictures of the README's learning path, made again: run from the repository's root
# (about two minutes on a 2-core CPU; the trained runs go to checkpoints/pictures-*).
set -e
M="python -m makemore"
P=docs/pictures
$M train names --type bigram --max-steps 1000 --eval-interval 250 --out checkpoints/pictures-bigram
$M train names --type mlp --set n_embd=2 --max-steps 3000 --eval-interval 500 --diagnostics 100 --out checkpoints/pictures-mlp
$M train names --type transformer --max-steps 1500 --eval-interval 500 --out checkpoints/pictures-transformer
$M show counts names -o $P/counts.png --dpi 40
$M show counts -c checkpoints/pictures-bigram -o $P/bigram.png --dpi 35
$M show embeddings -c checkpoints/pictures-mlp -o $P/embeddings.png --dpi 60
$M show training checkpoints/pictures-mlp -o $P/training.png --dpi 60
$M show attention -c checkpoints/pictures-transformer --prompt sophia -o $P/attention.png --dpi 60
$M plot checkpoints/pictures-bigram checkpoints/pictures-mlp checkpoints/pictures-transformer --x tokens --y bits -o $P/curves.png
