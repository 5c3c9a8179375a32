"""kg2text: verbalise knowledge-base triples with a frozen language model and a tiny trained prefix."""

__version__ = "0.1.0"
