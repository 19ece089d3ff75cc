"""Firmographic enrichment: the waterfall (``waterfall``) runs the configured providers (``nppes``,
``reference``, ``industry``) in order; ``base`` is the contract they share, ``taxonomy`` the NUCC
grouping, ``enrichment.yaml`` the shipped configuration revops edits."""
