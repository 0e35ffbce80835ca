"""Item embeddings for GenSAR (GENSAR.md section 1).

- ``SASRec``: collaborative embeddings from a SASRec-style recommender trained in C.
- ``SentenceEncoder``: semantic embeddings from a BERT-family sentence encoder whose forward
  pass runs in C (default all-MiniLM-L6-v2; any local BERT folder such as bge-base-en-v1.5),
  with a TF-IDF + truncated-SVD fallback when no weights can be had.
"""
from .semantic import SentenceEncoder
from ._tfidf import TfidfSvdEncoder

__all__ = ["SentenceEncoder", "TfidfSvdEncoder"]
from .sasrec import SASRec

__all__ += ["SASRec"]
