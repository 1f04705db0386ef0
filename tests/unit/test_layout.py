"""The house rules (issue 18): the import graph, small modules, tests that stand alone."""

from __future__ import annotations

import ast

from factories import ROOT, import_graph

MAX_MODULE_LINES = 330  # one sitting (the issue: none much over 300)


def test_no_import_circle_no_upward_import_no_needless_deferred_import():
    assert import_graph().breaches() == []


def test_every_module_has_a_layer():
    graph = import_graph()
    for name in graph.modules():
        graph.layer_of(name)  # raises naming the module


def test_the_rules_catch_what_they_forbid(tmp_path, monkeypatch):
    """The checker itself: an upward import, a circle, a deferred light import and a plugin
    that loads a heavy library are found."""
    graph = import_graph()
    package = tmp_path / "pytest_mmlu"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plugin.py").write_text("from . import text\n\ndef f():\n    from . import sizes\n")
    (package / "sizes.py").write_text("")
    (package / "text.py").write_text("import numpy\n\nfrom . import plugin\n")
    monkeypatch.setattr(graph, "PACKAGE", package)
    found = "\n".join(graph.breaches())
    assert "imports plugin (entry points) from a lower layer (base)" in found
    assert "import circle" in found
    assert "imports sizes inside a function, and it defers no heavy library" in found
    assert "pytest_mmlu.plugin imports a heavy library when it loads (through text)" in found


def test_architecture_shows_the_layers_as_they_are():
    """ARCHITECTURE.md's drawing of the layers is the import graph's, never a stale copy."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    assert "\n".join(import_graph().drawing()) in text


def test_modules_are_small():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "pytest_mmlu").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_test_module_imports_another():
    """Shared helpers live in conftest.py, factories.py and fakes.py."""
    crossing = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            crossing += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert crossing == []


def test_the_failed_outcomes_are_one_list():
    from pytest_mmlu.gates import OUTCOME_CAUSES
    from pytest_mmlu.reports.merge import SEVERITY

    assert sorted(SEVERITY) == sorted(OUTCOME_CAUSES)


def test_the_readme_shows_each_marker_as_it_is_declared():
    """The README's marker list quotes each marker's signature (``markers.marker_docs``)."""
    from pytest_mmlu.markers import marker_docs

    readme = (ROOT / "README.md").read_text()
    signatures = [doc.split("): ", 1)[0] + ")" for doc in marker_docs()]
    assert [s for s in signatures if f"`@pytest.mark.{s}`" not in readme] == []
