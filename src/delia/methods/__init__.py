"""Baselines and ablations as registered recipes over the stages (`delia ls methods`).

Importing this package fills `METHODS` and the method-specific data transforms (fact Q&A, DMT stage 2).
"""

from delia.methods import dmt, facts, hooks, translation  # noqa: F401  (register transforms and hooks)
from delia.methods.facts import D_SEP, FACTS, fact_qa
from delia.methods.recipes import METHODS

__all__ = ["D_SEP", "FACTS", "METHODS", "fact_qa"]
