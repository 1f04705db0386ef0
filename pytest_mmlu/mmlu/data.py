"""MMLU questions from the hub dataset, a local copy of it, or the original CSVs.

Sources (``--mmlu-data``):
- a hub dataset id (default ``cais/mmlu``, parquet, downloaded per subject);
- a local copy of that dataset: a folder of ``<subject>/{dev,test}-*.parquet``;
- the original Hendrycks layout: a folder holding ``dev/`` and ``test/`` with
  ``<subject>_{dev,test}.csv`` (or its parent ``data/``), or a .zip/.tar of it.
  No header; columns ``question,A,B,C,D,answer``.

Every row is checked; a bad file raises :class:`DataError` naming the file and
line.  The fingerprint hashes the questions themselves, so the same questions
give the same fingerprint whatever the container format.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..sources import looks_like_path
from ..text import first_line

LETTERS = "ABCD"
SPLITS = ("dev", "test")


class DataError(Exception):
    """The MMLU data is missing or malformed; the message names the culprit."""


@dataclass(frozen=True)
class Question:
    subject: str
    index: int  # 0-based row in the subject's split
    question: str
    choices: tuple[str, ...]  # four, A to D
    answer: int  # 0-3


def parse_csv(text: str, where: str, subject: str) -> list[Question]:
    rows: list[Question] = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if len(row) != 6:
            raise DataError(f"{where}:{line_no}: expected 6 columns (question,A,B,C,D,answer), found {len(row)}")
        answer = row[5].strip()
        if answer not in LETTERS:
            raise DataError(f"{where}:{line_no}: answer must be one of A, B, C, D, found {row[5]!r}")
        rows.append(Question(subject, len(rows), row[0], tuple(row[1:5]), LETTERS.index(answer)))
    if not rows:
        raise DataError(f"{where}: no questions in file")
    return rows


class _CsvTree:
    """Hendrycks CSVs behind a callable that returns a file's text (folder, zip or tar)."""

    def __init__(self, label: str, names: Iterable[str], read: Callable[[str], bytes]) -> None:
        self.label = label
        self._read = read
        self._by_split: dict[tuple[str, str], str] = {}
        for name in names:
            parts = name.replace("\\", "/").split("/")
            if len(parts) >= 2 and parts[-2] in SPLITS and parts[-1].endswith(f"_{parts[-2]}.csv"):
                subject = parts[-1][: -len(f"_{parts[-2]}.csv")]
                self._by_split.setdefault((subject, parts[-2]), name)
        if not self._by_split:
            raise DataError(
                f"{label}: no MMLU CSVs found (expected dev/<subject>_dev.csv and "
                "test/<subject>_test.csv, as in the original data/ folder)"
            )

    def load(self, subject: str, split: str) -> list[Question]:
        name = self._by_split.get((subject, split))
        if name is None:
            raise DataError(
                f"{self.label}: no {split} file for subject {subject!r} (expected {split}/{subject}_{split}.csv)"
            )
        try:
            text = self._read(name).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.label}/{name}: not UTF-8 text ({exc})") from None
        return parse_csv(text, f"{self.label}:{name}", subject)


class _ParquetTree:
    """A local copy of the hub dataset cais/mmlu: <subject>/<split>-*.parquet."""

    def __init__(self, root: Path, label: str | None = None) -> None:
        self.root = root
        self.label = label or str(root)

    def load(self, subject: str, split: str) -> list[Question]:
        files = sorted((self.root / subject).glob(f"{split}-*.parquet"))
        if not files:
            raise DataError(
                f"{self.label}: no {split} parquet for subject {subject!r} (expected {subject}/{split}-*.parquet)"
            )
        import pyarrow.parquet as pq  # comes with datasets, which lm-eval needs

        rows: list[Question] = []
        for file in files:
            try:
                table = pq.read_table(file, columns=["question", "choices", "answer"]).to_pylist()
            except Exception as exc:  # noqa: BLE001 - any reader failure is a data error
                raise DataError(f"{file}: cannot read parquet ({first_line(exc)})") from None
            for offset, rec in enumerate(table):
                choices, answer = rec["choices"], rec["answer"]
                if not isinstance(choices, list) or len(choices) != len(LETTERS):
                    raise DataError(f"{file}: row {offset}: expected {len(LETTERS)} choices, found {choices!r}")
                if answer not in range(len(LETTERS)):
                    raise DataError(f"{file}: row {offset}: answer must be 0-3, found {answer!r}")
                rows.append(Question(subject, len(rows), rec["question"], tuple(choices), answer))
        if not rows:
            raise DataError(f"{self.label}: {subject}/{split} has no questions")
        return rows


class _HubDataset:
    """The hub dataset (cais/mmlu layout), fetched one subject at a time."""

    def __init__(self, repo_id: str) -> None:
        self.label = repo_id
        self._repo_id = repo_id
        self._local: dict[str, _ParquetTree] = {}

    def load(self, subject: str, split: str) -> list[Question]:
        if subject not in self._local:
            from huggingface_hub import snapshot_download

            try:
                root = snapshot_download(self._repo_id, repo_type="dataset", allow_patterns=[f"{subject}/*"])
            except Exception as exc:  # noqa: BLE001 - offline, auth, missing repo...
                reason = first_line(exc)
                raise DataError(
                    f"cannot download MMLU subject {subject!r} from the Hugging Face hub dataset "
                    f"{self._repo_id!r} ({reason}); with no network, pass --mmlu-data=PATH to a "
                    "local copy or the original CSVs"
                ) from None
            self._local[subject] = _ParquetTree(Path(root), self._repo_id)
        return self._local[subject].load(subject, split)


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = archive.extractfile(member)
    if stream is None:  # only regular files were listed; a tar rewritten underneath us
        raise DataError(f"{member.name}: not a regular file in the tar")
    return stream.read()


def _open_source(spec: str):
    path = Path(spec)
    if path.is_file() and zipfile.is_zipfile(path):
        zf = zipfile.ZipFile(path)
        return _CsvTree(str(path), zf.namelist(), zf.read)
    if path.is_file() and tarfile.is_tarfile(path):
        tf = tarfile.open(path)
        members = {m.name: m for m in tf.getmembers() if m.isfile()}
        return _CsvTree(str(path), members, lambda n: _member_bytes(tf, members[n]))
    if path.is_file():
        raise DataError(f"{path}: not a .zip or .tar of MMLU CSVs")
    if path.is_dir():
        for root in (path, path / "data"):
            if (root / "dev").is_dir() and (root / "test").is_dir():
                names = [str(p.relative_to(root)) for p in root.glob("*/*.csv")]
                return _CsvTree(str(root), names, lambda n, r=root: (r / n).read_bytes())  # type: ignore[misc]
        if any(path.glob("*/*.parquet")):
            return _ParquetTree(path)
        raise DataError(
            f"{path}: not an MMLU folder (expected dev/ and test/ CSV folders, data/ holding "
            "them, or <subject>/<split>-*.parquet)"
        )
    if looks_like_path(spec):  # a hub id is "name" or "namespace/name"
        raise DataError(f"{spec}: no such file or folder")
    return _HubDataset(spec)


class MmluData:
    """Questions by subject and split, read once and kept."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._source = _open_source(spec)
        self._cache: dict[tuple[str, str], list[Question]] = {}
        self._fingerprints: dict[tuple[str, ...], str] = {}

    @property
    def label(self) -> str:
        return self._source.label

    def split(self, subject: str, split: str) -> list[Question]:
        key = (subject, split)
        if key not in self._cache:
            self._cache[key] = self._source.load(subject, split)
        return self._cache[key]

    def shots(self, subject: str, n: int) -> list[Question]:
        """lm-eval's ``first_n`` sampler over the dev split."""
        dev = self.split(subject, "dev")
        if n > len(dev):
            raise DataError(f"{self.label}: {subject} has {len(dev)} dev questions, {n} shots asked")
        return dev[:n]

    def test_questions(self, subject: str, limit: int | None) -> list[Question]:
        rows = self.split(subject, "test")
        return rows if limit is None else rows[:limit]

    def fingerprint(self, subjects: Iterable[str]) -> str:
        """sha256 over the dev and test questions of these subjects (content, not files).

        Kept per subject set: the result cache and the evaluation both ask for it."""
        key = tuple(sorted(subjects))
        if key not in self._fingerprints:
            h = hashlib.sha256()
            for subject in key:
                for split in SPLITS:
                    for q in self.split(subject, split):
                        h.update(json.dumps([subject, split, q.question, q.choices, q.answer]).encode())
            self._fingerprints[key] = h.hexdigest()
        return self._fingerprints[key]
