"""MMLU itself: the questions (``data``), the subjects and categories (``subjects``), lm-eval's
prompts (``prompts``) and their chat-template rendering (``chat``), token requests built from
them (``requests``), a shard's part of the questions (``shards``), one evaluation through the
engine (``evaluation``) and its result (``results``)."""
