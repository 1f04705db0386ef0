"""The 57 MMLU subjects and lm-eval's four categories.

Membership is lm-eval's (``lm_eval/tasks/mmlu/default/mmlu_*.yaml`` tags); a
test (tests/unit/test_subjects_and_sizes.py) checks this table against the installed lm-eval
so the two can never drift apart silently.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

CATEGORY_SUBJECTS: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra",
        "anatomy",
        "astronomy",
        "college_biology",
        "college_chemistry",
        "college_computer_science",
        "college_mathematics",
        "college_physics",
        "computer_security",
        "conceptual_physics",
        "electrical_engineering",
        "elementary_mathematics",
        "high_school_biology",
        "high_school_chemistry",
        "high_school_computer_science",
        "high_school_mathematics",
        "high_school_physics",
        "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic",
        "high_school_european_history",
        "high_school_us_history",
        "high_school_world_history",
        "international_law",
        "jurisprudence",
        "logical_fallacies",
        "moral_disputes",
        "moral_scenarios",
        "philosophy",
        "prehistory",
        "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics",
        "high_school_geography",
        "high_school_government_and_politics",
        "high_school_macroeconomics",
        "high_school_microeconomics",
        "high_school_psychology",
        "human_sexuality",
        "professional_psychology",
        "public_relations",
        "security_studies",
        "sociology",
        "us_foreign_policy",
    ),
    "other": (
        "business_ethics",
        "clinical_knowledge",
        "college_medicine",
        "global_facts",
        "human_aging",
        "management",
        "marketing",
        "medical_genetics",
        "miscellaneous",
        "nutrition",
        "professional_accounting",
        "professional_medicine",
        "virology",
    ),
}

CATEGORY_OF: dict[str, str] = {s: c for c, subs in CATEGORY_SUBJECTS.items() for s in subs}
ALL_SUBJECTS: tuple[str, ...] = tuple(sorted(CATEGORY_OF))


class UnknownSubject(ValueError):
    pass


def resolve_subjects(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Expand a subject, a category, ``"all"`` or a list of them into sorted subject names."""
    names = [spec] if isinstance(spec, str) else list(spec)
    if not names:
        raise UnknownSubject("subjects is empty")
    out: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise UnknownSubject(f"subject must be a string, got {name!r}")
        if name == "all":
            out.update(ALL_SUBJECTS)
        elif name in CATEGORY_SUBJECTS:
            out.update(CATEGORY_SUBJECTS[name])
        elif name in CATEGORY_OF:
            out.add(name)
        else:
            choices = [*ALL_SUBJECTS, *CATEGORY_SUBJECTS, "all"]
            close = difflib.get_close_matches(name, choices, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownSubject(
                f"unknown MMLU subject {name!r}{hint}; use a subject name, one of "
                f"{', '.join(CATEGORY_SUBJECTS)}, or 'all'"
            )
    return tuple(sorted(out))


def describe_subjects(spec: str | Iterable[str]) -> str:
    """A short human label for a subject spec, as written by the user."""
    return spec if isinstance(spec, str) else ",".join(spec)
