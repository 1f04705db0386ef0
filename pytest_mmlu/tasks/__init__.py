"""lm-eval's own log-likelihood tasks (ARC, HellaSwag, Winogrande, TruthfulQA, MMLU, ...)
through our engine.

lm-eval builds everything but the scores: its task objects load the documents, draw the
few-shot examples with its seed, render the prompts and make the (context, continuation)
requests (``registry.py``); our engine scores them (``evaluation.py``); lm-eval's own
``process_results`` and aggregations turn the scores into its metrics.  Nothing of a
task's prompt or metric is re-implemented here.
"""
