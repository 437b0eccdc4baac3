"""The bench's methods, by name: each family says which settings reach a byte budget, fits, encodes, searches.

    float32, float16   the encoder's vectors (float32 is the reference: recall 1)          floats.py
    int8               int8 codes, ranges calibrated on the fit documents, float32 query   int8.py
    binary             sign bits, top 100 by Hamming rescored with the float32 query       binary.py
    pca-scalar         PCA + Lloyd-Max scalar codes, every (dims, bits) split of a budget  pca_scalar.py
    pq, opq, lsh       faiss product quantization, OPQ, LSH                                 faiss_codes.py
    rabitq             PCA + rotation + faiss RaBitQ at 1, 2, 4 bits                        rabitq.py
    head               the distilled quantum head, angles at 8 bits per qubit               head.py

A new family is a module with an object like these (`qcompress.bench.methods.base.Method`), added to `METHODS`.

Example:
    >>> list(METHODS)
    ['float32', 'float16', 'int8', 'binary', 'pca-scalar', 'pq', 'opq', 'rabitq', 'lsh', 'head']
"""

from qcompress.bench.methods.base import FitContext, Fitted, Method, Refusal, Setting, stored_bytes
from qcompress.bench.methods.binary import BINARY
from qcompress.bench.methods.faiss_codes import LSH, OPQ, PQ
from qcompress.bench.methods.floats import FLOAT16, FLOAT32, exact_topk
from qcompress.bench.methods.head import HEAD
from qcompress.bench.methods.int8 import INT8
from qcompress.bench.methods.pca_scalar import PCA_SCALAR
from qcompress.bench.methods.rabitq import RABITQ

__all__ = ["METHODS", "FitContext", "Fitted", "Method", "Refusal", "Setting", "exact_topk", "stored_bytes"]

METHODS: dict[str, Method] = {m.name: m for m in (FLOAT32, FLOAT16, INT8, BINARY, PCA_SCALAR, PQ, OPQ, RABITQ, LSH,
                                                  HEAD)}
