"""makemore: character- and BPE-level language models, from a bigram table to a transformer.

The Python API (`makemore/api.py`): `train(...)` a model as `makemore train` does, `load(path)` a
trained one, then `sample`, `score` and `evaluate` it.
"""

from makemore.api import Model, load, train
from makemore.errors import MakemoreError

__all__ = ["MakemoreError", "Model", "load", "train"]
