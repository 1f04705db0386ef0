from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_mmlu.mmlu.subjects import ALL_SUBJECTS, CATEGORY_OF, UnknownSubject, resolve_subjects
from pytest_mmlu.sizes import parse_size


def test_categories_are_lm_evals_exact_membership():
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    theirs = {}
    for f in folder.glob("mmlu_*.yaml"):
        cfg = yaml.safe_load(f.read_text())
        theirs[cfg["dataset_name"]] = cfg["tag"].removeprefix("mmlu_").removesuffix("_tasks")
    assert theirs == CATEGORY_OF
    assert len(ALL_SUBJECTS) == 57


def test_resolve_subjects():
    assert resolve_subjects("anatomy") == ("anatomy",)
    assert len(resolve_subjects("stem")) == 19
    assert resolve_subjects(["virology", "anatomy", "virology"]) == ("anatomy", "virology")
    assert resolve_subjects("all") == ALL_SUBJECTS
    with pytest.raises(UnknownSubject, match=r"unknown MMLU subject 'anatomyy' \(did you mean 'anatomy'\?\)"):
        resolve_subjects("anatomyy")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("6 GiB", 6 * 2**30),
        ("6GB", 6 * 10**9),
        ("6144 MiB", 6 * 2**30),
        (123, 123),
        ("1.5 GiB", 3 * 2**29),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["6 GiBs", "", "-1 GB", 0, True, "six GB", 1.5])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)
