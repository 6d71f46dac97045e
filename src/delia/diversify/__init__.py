"""Instruction diversification (LLM and offline grammar), special-token substitution and checks, diversity
statistics, and applying instructions to downstream data."""

from delia.diversify.apply import HALU_TEMPLATE, Split, Template, apply_instructions, split_rows
from delia.diversify.grammar import grammar_propose, grammar_variants
from delia.diversify.llm import build_prompt, parse_variants
from delia.diversify.stage import (DIVERSIFIERS, DiversifyConfig, DiversifyError, DiversifyResult, LLMConfig,
                                   run_diversify)
from delia.diversify.text import FilterConfig, diversity_stats, filter_variants, similarity
from delia.diversify.tokens import TokenCheck, check_special_token, substitute_format

__all__ = ["DIVERSIFIERS", "HALU_TEMPLATE", "DiversifyConfig", "DiversifyError", "DiversifyResult", "FilterConfig",
           "LLMConfig", "Split", "Template", "TokenCheck", "apply_instructions", "build_prompt",
           "check_special_token", "diversity_stats", "filter_variants", "grammar_propose", "grammar_variants",
           "parse_variants", "run_diversify", "similarity", "split_rows", "substitute_format"]
