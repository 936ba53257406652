"""Data sets: each module registers its own (``polydiff.registry.register_dataset``). Items are
``{"x": Tensor (*S), "cond": {...}}``; see ``examples`` for batches, ``folder`` for files read lazily,
``streaming`` for corpora too large to index and ``transforms`` for per-batch randomness."""
