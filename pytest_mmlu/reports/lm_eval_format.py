"""lm-eval's output files (``--output_path DIR --log_samples``): what they hold, and how to find them.

lm-eval 0.4 writes, per run, under ``DIR/<model_name_sanitized>/``: ``results_<date>.json`` (per
task: metrics, its config with ``num_fewshot``, ``n-shot``, ``n-samples``; per run: the model
and the chat-template fields) and one ``samples_<task>_<date>.jsonl`` per task (per question:
``doc_id``, ``doc``, ``arguments`` — the prompt of each choice —, ``filtered_resps`` — the
log-likelihoods —, and sha256 hashes of the doc, the prompt and the target). Values in the
samples are strings (lm-eval stringifies them); both are read and written that way.
Reading them is ``lm_eval_read.py``, writing ``lm_eval_write.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..mmlu.data import LETTERS
from ..mmlu.prompts import FEWSHOT_DELIMITER, TARGET_DELIMITER

# lm-eval's default MMLU task (lm_eval/tasks/mmlu/default/_default_template_yaml).
DOC_TO_TEXT = (
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
)


DEFAULT_TEMPLATE = {
    "doc_to_text": DOC_TO_TEXT,
    "doc_to_choice": list(LETTERS),
    "doc_to_target": "answer",
    "target_delimiter": TARGET_DELIMITER,
    "fewshot_delimiter": FEWSHOT_DELIMITER,
    "output_type": "multiple_choice",
}


def sanitize_model_name(name: str) -> str:
    """lm-eval's folder name for a model (``EvaluationTracker``: ``/`` and friends become ``__``)."""
    return re.sub(r"[\"<>:/|\\?*\[\]]+", "__", name)


def is_lm_eval_output(path: str | Path) -> bool:
    """A folder holding a ``results_*.json`` of lm-eval, or such a file."""
    target = Path(path)
    if target.is_dir():
        return any(target.rglob("results_*.json"))
    if target.is_file() and target.suffix == ".json":
        try:
            data = json.loads(target.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and "configs" in data and "results" in data and "tests" not in data
    return False
