"""kg2text: verbalise knowledge-base triples with a frozen language model and a tiny trained prefix.

The Python API (kg2text/api.py, and the README): ``Verbalizer`` loads a trained run and generates,
``train`` trains from a ``TrainConfig``, ``evaluate`` scores sentences, ``metric_path`` locates our
metrics for Hugging Face ``evaluate``. Names load on first use, so ``import kg2text`` stays light.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {"Verbalizer": "kg2text.api", "train": "kg2text.api", "evaluate": "kg2text.api",
           "TrainConfig": "kg2text.training", "DecodeConfig": "kg2text.generate", "Record": "kg2text.data",
           "read_pair_file": "kg2text.data", "UserError": "kg2text.errors", "metric_path": "kg2text.hf_metrics"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'kg2text' has no attribute {name!r}")
