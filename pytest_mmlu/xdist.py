"""pytest-xdist: workers ship, the controller collects.

The role is decided once, by pytest-xdist's own ``workerinput``. What crosses from a worker:
- each test's record, on its teardown report (``pytest_mmlu_record``), as the test ends, so
  that a worker that crashes loses nothing it reported;
- the manifest (every MMLU test collected and the gates it declares), on the first report a
  worker sends: the controller collects nothing itself, and a test whose worker crashed
  before it reported still has a record;
- the model entry and the notes, in ``workeroutput`` at the worker's end (``PAYLOAD_VERSION``).
"""

from __future__ import annotations

from typing import Any

import pytest

from .session import MmluSession

MANIFEST_SENT = pytest.StashKey[bool]()  # this worker's manifest rode on a report already


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def ship_manifest(config: pytest.Config, report: pytest.TestReport, sess: MmluSession) -> None:
    """A worker's first report carries its manifest to the controller."""
    if is_worker(config) and not config.stash.get(MANIFEST_SENT, False):
        report.pytest_mmlu_manifest = sess.manifest  # type: ignore[attr-defined]
        config.stash[MANIFEST_SENT] = True


def ship_payload(config: pytest.Config, sess: MmluSession) -> None:
    """A worker's end: its model entry and notes, for the controller's summary and report."""
    config.workeroutput["pytest_mmlu"] = sess.payload()  # type: ignore[attr-defined]


class Controller:
    """The controller's side: collects the model entry and notes that workers ship at their end
    (as pytest-cov does); records and manifests arrive with the reports (``plugin.Records``)."""

    def __init__(self, sess: MmluSession) -> None:
        self.sess = sess

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        payload = getattr(node, "workeroutput", {}).get("pytest_mmlu")
        if payload:
            self.sess.merge(payload)
