"""makemore: character- and BPE-level language models, from a bigram table to a transformer."""
