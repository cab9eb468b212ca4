"""retrieval: BEIR data, Lucene indexes through Pyserini, dense and learned sparse retrievers.

Importing this package never starts Java; modules that need Pyserini call :func:`retrieval.jvm.ensure_jvm`.
"""
