"""The package version and its distribution name, in a module of their own so that any module can import them
without importing the package.

The command and the import name are `qcompress`; the distribution (what `pip install` takes, and what
`importlib.metadata.version` and sentence-transformers' requirement checks look up) is `qcompress-embeddings`: the
name `qcompress` on PyPI belongs to an unrelated 2019 package (a quantum autoencoder framework).

Example:
    >>> DISTRIBUTION, PIP_INSTALL
    ('qcompress-embeddings', 'pip install qcompress-embeddings')
"""

__version__ = "0.1.0"
DISTRIBUTION = "qcompress-embeddings"
PIP_INSTALL = f"pip install {DISTRIBUTION}"
