"""pytest-mmlu: gate language-model releases on MMLU inside pytest.

This package is imported in every pytest run of an environment where it is
installed (it is a ``pytest11`` plugin), so nothing here imports torch,
transformers or lm_eval at module level.
"""

__version__ = "0.1.0"

# Bumped whenever a change could alter a score: prompts, tokenization, engine
# numerics.  Part of the result-cache key and of every JSON report.
SCORING_VERSION = 1
