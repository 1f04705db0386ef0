"""The import graph of pytest_mmlu, and the rules it keeps (ARCHITECTURE.md).

    python scripts/import_graph.py          # the layers, each module's imports, and any breach
    python scripts/import_graph.py --drawing  # the layers alone (ARCHITECTURE.md shows it)
    python scripts/import_graph.py --dot    # the graph in Graphviz's dot language

Rules, checked by tests/unit/test_layout.py (and by CI, running this script):
- every module sits in a layer (``LAYERS``); a module imports only from its own layer or
  lower ones (imports under ``if TYPE_CHECKING:`` are for type hints and do not count);
- no import circle (through module-level and function-level imports alike);
- a function-level import is there to defer a heavy library: either the library itself
  (``HEAVY``), a module of ours that imports one at module level, or an optional one
  guarded by ``except ImportError``;
- the plugin, loaded in every pytest run, imports nothing heavy when it loads.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_mmlu"

# Lowest first. A module's layer is its own entry, else its package's (``engine``: the engine).
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base",
        [
            "pytest_mmlu",
            "sizes",
            "text",
            "stats",
            "power",
            "sources",
            "=mmlu",
            "=models",
            "=memory",
            "=outputs",
            "=reports",
            "=tasks",
        ],
    ),  # "=": the package's docstring only
    (
        "data and kinds",
        [
            "mmlu.subjects",
            "mmlu.data",
            "mmlu.prompts",
            "models.variants",
            "prompt_identity",
            "identity_words",
            "models.errors",
            "memory.errors",
            "reports.report",
            "reports.lm_eval_format",
            "tasks.registry",
        ],
    ),
    (
        "what is evaluated",
        ["mmlu.chat", "mmlu.results", "mmlu.shards", "identity", "request", "software", "markers", "models.workers"],
    ),
    (
        "records, marks, models, memory, engine",
        [
            "records",
            "marks",
            "options",
            "models.content",
            "models.quantization",
            "models.devices",
            "models.adapters",
            "memory.allocator",
            "memory.cpu",
            "memory.cuda",
            "memory.meters",
            "engine",
            "mmlu.requests",
            "tasks.prepared",
            "tasks.runs",
        ],
    ),
    (
        "loading, evaluating, gates",
        ["models.plan", "models.load", "mmlu.evaluation", "tasks.evaluation", "reports.cache", "gates", "regression"],
    ),
    (
        "the judge, baselines",
        ["judge", "reports.baseline", "reports.lm_eval_read", "reports.lm_eval_tasks", "reports.lm_eval_write"],
    ),
    ("joining and emitting", ["reports.merge", "compare", "settings", "contradictions", "outputs"]),
    ("the run", ["session"]),
    ("the run's tests", ["evaluate", "xdist", "lm_eval_adapter"]),
    ("entry points", ["plugin", "cli"]),
]
HEAVY = {
    "torch",
    "transformers",
    "lm_eval",
    "numpy",
    "huggingface_hub",
    "peft",
    "torchao",
    "bitsandbytes",
    "accelerate",
    "matplotlib",
    "psutil",
    "pynvml",
    "jinja2",
    "tokenizers",
    "safetensors",
    "pyarrow",
    "datasets",
    "gguf",
}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module (dotted, without "pytest_mmlu.")
    target: str  # an internal module, or a top-level third-party name
    internal: bool
    in_function: bool
    guarded: bool  # inside ``try: ... except ImportError``
    type_only: bool  # under ``if TYPE_CHECKING:``
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "pytest_mmlu"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    """A module's own entry, else the entry of the package holding it."""
    for exact in (True, False):
        for index, (_, members) in enumerate(LAYERS):
            for member in members:
                if (
                    module == member.lstrip("=")
                    if exact
                    else (not member.startswith("=") and module.startswith(member + "."))
                ):
                    return index
    raise KeyError(f"pytest_mmlu.{module} is in no layer: add it to LAYERS in scripts/import_graph.py")


def _resolve(source: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """The internal modules an ``from ... import ...`` names (a name may be a module itself)."""
    base = source.split(".") if source != "pytest_mmlu" else []
    if not is_package:
        base = base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    stem = ".".join([*base, *([node.module] if node.module else [])])
    found = []
    for alias in node.names:
        candidate = f"{stem}.{alias.name}" if stem else alias.name
        found.append(candidate if candidate in known else (stem or "pytest_mmlu"))
    return found


def imports() -> list[Import]:
    known = set(modules())
    found: list[Import] = []
    for name, path in modules().items():
        found.extend(imports_of(name, path.name == "__init__.py", ast.parse(path.read_text()), known))
    return found


def imports_of(name: str, is_package: bool, tree: ast.AST, known: set[str]) -> list[Import]:
    """The imports of one module: where each points, and whether it is deferred, guarded or
    for type checking only."""
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool, guarded: bool, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            tc = type_only or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test))
            gd = guarded or (
                isinstance(child, ast.Try)
                and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in child.handlers)
            )
            if isinstance(child, ast.ImportFrom):
                if child.level or (child.module or "").startswith("pytest_mmlu"):
                    if not child.level:  # absolute: pytest_mmlu.x
                        child = ast.ImportFrom(
                            module=(child.module or "").removeprefix("pytest_mmlu").lstrip(".") or None,
                            names=child.names,
                            level=1,
                        )
                        targets = _resolve("pytest_mmlu", True, child, known)
                    else:
                        targets = _resolve(name, is_package, child, known)
                    for target in dict.fromkeys(targets):
                        found.append(Import(name, target, True, fn, gd, tc, child.lineno))
                else:
                    found.append(Import(name, (child.module or "").split(".")[0], False, fn, gd, tc, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    top = alias.name.split(".")[0]
                    if top == "pytest_mmlu":
                        target = alias.name.removeprefix("pytest_mmlu").lstrip(".") or "pytest_mmlu"
                        found.append(Import(name, target, True, fn, gd, tc, child.lineno))
                    else:
                        found.append(Import(name, top, False, fn, gd, tc, child.lineno))
            visit(child, fn, gd, tc)

    visit(tree, False, False, False)
    return found


def heavy_at_import(all_imports: list[Import]) -> set[str]:
    """Our modules that import a heavy library at module level, themselves or through ours."""
    direct = {
        i.source
        for i in all_imports
        if not i.internal and not i.in_function and not i.type_only and not i.guarded and i.target in HEAVY
    }
    edges: dict[str, set[str]] = {}
    for i in all_imports:
        if i.internal and not i.in_function and not i.type_only:
            edges.setdefault(i.source, set()).add(i.target)
    heavy = set(direct)
    changed = True
    while changed:
        changed = False
        for source, targets in edges.items():
            if source not in heavy and targets & heavy:
                heavy.add(source)
                changed = True
    return heavy


def breaches() -> list[str]:
    found = imports()
    heavy = heavy_at_import(found)
    problems = []
    for i in found:
        where = f"pytest_mmlu.{i.source}:{i.line}"
        if i.internal and not i.type_only and i.source != i.target:
            if layer_of(i.target) > layer_of(i.source):
                problems.append(
                    f"{where}: imports {i.target} ({LAYERS[layer_of(i.target)][0]}) from a lower "
                    f"layer ({LAYERS[layer_of(i.source)][0]})"
                )
        if i.in_function and not i.type_only and not i.guarded:
            deferred = i.target in heavy if i.internal else i.target in HEAVY
            if not deferred:
                problems.append(f"{where}: imports {i.target} inside a function, and it defers no heavy library")
    if "plugin" in heavy:  # loaded in every pytest run of the environment
        chain = {i.target: 0 for i in found if i.source == "plugin" and not i.in_function and i.target in heavy | HEAVY}
        problems.append(f"pytest_mmlu.plugin imports a heavy library when it loads (through {', '.join(chain)})")
    graph: dict[str, set[str]] = {}
    for i in found:
        if i.internal and not i.type_only and i.source != i.target:
            graph.setdefault(i.source, set()).add(i.target)
    problems.extend(f"import circle: {' -> '.join(cycle)}" for cycle in cycles(graph))
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def drawing() -> list[str]:
    """The layers, top first, each with its modules; a package whose modules all share one
    layer is shown once as ``name/`` (package docstrings alone are not shown)."""
    docstring_only = {m.lstrip("=") for _, members in LAYERS for m in members if m.startswith("=")}
    shown = sorted(m for m in modules() if m not in docstring_only and m != "pytest_mmlu")
    lines = []
    for index in reversed(range(len(LAYERS))):
        names: list[str] = []
        for m in shown:
            if layer_of(m) != index:
                continue
            package = m.split(".")[0]
            family = [n for n in shown if n == package or n.startswith(package + ".")]
            name = f"{package}/" if len(family) > 1 and {layer_of(n) for n in family} == {index} else m
            if name not in names:
                names.append(name)
        lines.append(f"{index}  {LAYERS[index][0]:<40} {', '.join(names)}".rstrip())
    return lines


def main(argv: list[str]) -> int:
    found = imports()
    if "--drawing" in argv:
        print("\n".join(drawing()))
        return 0
    if "--dot" in argv:
        print("digraph pytest_mmlu {\n  rankdir=BT;")
        for index, (title, _members) in enumerate(LAYERS):
            names = sorted(m for m in modules() if layer_of(m) == index)
            print(
                f'  subgraph cluster_{index} {{ label="{index}: {title}"; ' + " ".join(f'"{m}";' for m in names) + " }"
            )
        edges = sorted({(i.source, i.target) for i in found if i.internal and not i.type_only and i.source != i.target})
        for source, target in edges:
            print(f'  "{source}" -> "{target}";')
        print("}")
        return 0
    for index, (title, _members) in enumerate(LAYERS):
        print(f"{index}: {title}")
        for m in sorted(m for m in modules() if layer_of(m) == index):
            targets = sorted(
                {i.target for i in found if i.source == m and i.internal and not i.type_only and i.target != m}
            )
            print(f"    {m}" + (f" -> {', '.join(targets)}" if targets else ""))
    problems = breaches()
    print(
        "\n".join(["", *problems]) if problems else "\nno circle, no upward import, no needless function-level import"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
