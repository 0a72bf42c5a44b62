"""Candidate generation: sources behind one protocol, the merge, the two-tower model, FAISS.

Modules: ``types`` (request/candidate values), ``features`` (pure Polars statistics),
``sources`` (trending, tags, fresh, explore, two-tower vector), ``merge``, ``two_tower``
(model + training), ``index`` (the only faiss user), ``model`` (the served model, loaded from
the bundle), ``pipeline`` (fit, ``train_retrieval``, evaluation adapters). See
``docs/retrieval.md``.
"""
