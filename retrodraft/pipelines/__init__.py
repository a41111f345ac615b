"""Ready-made pipelines that put the retrieval drafter to work.

- :mod:`retrodraft.pipelines.code`: index a code base (the Python standard library by default)
  and complete code stubs drafting from it.
- :mod:`retrodraft.pipelines.rag`: chunk documents, embed and retrieve passages with faiss, put
  them in the prompt *and* in the retrieval drafter's per-request datastore.
"""
