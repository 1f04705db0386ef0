"""examples/github-workflow.yml: valid for GitHub Actions (SchemaStore's workflow schema, as
vendored by check-jsonschema), and consistent with the plugin it runs: the shard matrix, the
options, the report names the merge reads and the merge command itself."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from factories import ROOT

WORKFLOW = ROOT / "examples" / "github-workflow.yml"


def schema_check(path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert tool, "check-jsonschema is a dev dependency (pip install -e '.[dev]')"
    return subprocess.run(
        [tool, "--builtin-schema", "vendor.github-workflows", str(path)], capture_output=True, text=True
    )


def test_the_workflow_validates_against_github_s_schema(tmp_path):
    done = schema_check(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    # The check can fail: a job without runs-on, a misspelt key.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        WORKFLOW.read_text().replace(
            "    runs-on: ubuntu-latest\n    timeout-minutes: 15\n", "    timeout-minutes: 15\n"
        )
    )
    assert schema_check(broken).returncode != 0
    broken.write_text(WORKFLOW.read_text().replace("strategy:", "stratgy:"))
    assert schema_check(broken).returncode != 0


def runs(job: dict) -> list[str]:
    return [" ".join(step["run"].split()) for step in job["steps"] if "run" in step]


def test_the_workflow_is_consistent_with_the_plugin():
    from pytest_mmlu.options import OPTIONS

    flow = yaml.safe_load(WORKFLOW.read_text())
    shard, merge = flow["jobs"]["shard"], flow["jobs"]["merge"]
    shards = shard["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1))
    (command,) = [r for r in runs(shard) if "pytest" in r and "--mmlu-shard" in r]
    assert f'--mmlu-shard "${{{{ matrix.shard }}}}/{len(shards)}"' in command  # matrix and split agree
    known = {opt.cli for opt in OPTIONS}
    assert set(re.findall(r"--mmlu-[a-z-]+", command)) <= known
    # The pytest cache (the MMLU result cache) is restored between runs.
    caches = [s for s in shard["steps"] if s.get("uses", "").startswith("actions/cache@")]
    assert any(s["with"]["path"] == ".pytest_cache" for s in caches)
    # The merge runs after every shard, even failed ones, on the reports the shards upload.
    assert merge["needs"] == "shard" and "cancelled()" in merge["if"]
    report = re.search(r'--mmlu-report "([^"]+)"', command).group(1)
    uploads = [s for s in shard["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0]["with"]["path"] == report
    download = next(s for s in merge["steps"] if s.get("uses", "").startswith("actions/download-artifact@"))
    assert fnmatch.fnmatch(uploads[0]["with"]["name"], download["with"]["pattern"])
    (merge_command,) = [r for r in runs(merge) if r.startswith("pytest-mmlu merge")]
    argv = shlex.split(merge_command)[1:]
    pattern = argv[1]
    for i in shards:
        assert fnmatch.fnmatch(report.replace("${{ matrix.shard }}", str(i)), pattern)


def test_the_merge_command_of_the_workflow_runs(tmp_path, monkeypatch, capsys):
    """The workflow's merge line, with its shell glob expanded, is a valid command of ours:
    here on shard reports missing their third, so it names what is missing."""
    from pytest_mmlu.cli import main
    from pytest_mmlu.reports.report import write_json_atomic

    flow = yaml.safe_load(WORKFLOW.read_text())
    (merge_command,) = [r for r in runs(flow["jobs"]["merge"]) if r.startswith("pytest-mmlu merge")]
    monkeypatch.chdir(tmp_path)
    for i in (1, 2):
        write_json_atomic(
            tmp_path / f"mmlu-shard-{i}.json",
            {"schema": 1, "shard": {"index": i, "count": 3}, "settings": {}, "tests": []},
        )
    argv = []
    for word in shlex.split(merge_command)[1:]:
        argv.extend(sorted(str(p.name) for p in tmp_path.glob(word)) if "*" in word else [word])
    assert main(argv) == 2
    assert "incomplete set of shards: missing 3/3" in capsys.readouterr().err


def test_the_readme_points_to_the_workflow():
    assert "examples/github-workflow.yml" in (ROOT / "README.md").read_text()
