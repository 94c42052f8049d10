"""Measuring encoders: zero-shot classification, retrieval, retrieval fairness and subject
fidelity. Each metric module works on embeddings (numpy, L2-normalised rows), so it is tested
on hand-made vectors; :mod:`.data` reads the evaluation sets a user brings and
:mod:`pairsift.pipeline.evaluate` embeds them with any encoder pairsift loads."""
