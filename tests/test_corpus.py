"""The chatterbot-corpus dialogues round-trip exactly through import and export.

The whole corpus (about 7,600 dialogues in 28 language folders) runs on
SQLite. The local D1 engine gets the first two files of each language, so
every script is still tested while the run stays short.
"""

from __future__ import annotations

import functools
import io
import json
import sys
from pathlib import Path

import pytest

from d1store import D1Store
from d1store.io import ExportStats, Importer, export_pieces

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpus_to_jsonl  # noqa: E402


@functools.cache
def corpus_lines(files_per_language: int | None) -> list[str]:
    lines: list[str] = []
    per_language: dict[str, int] = {}
    for language, category, file in corpus_to_jsonl.corpus_files():
        per_language[language] = per_language.get(language, 0) + 1
        if files_per_language is not None and per_language[language] > files_per_language:
            continue
        lines.extend(
            json.dumps(record, ensure_ascii=False)
            for record in corpus_to_jsonl.dialogue_lines(language, category, file)
        )
    return lines


def test_corpus_script_output(tmp_path: Path) -> None:
    out = tmp_path / "corpus.jsonl"
    assert corpus_to_jsonl.main([str(out)]) == 0
    records = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
    assert len(records) > 7000
    assert len({record["metadata"]["language"] for record in records}) >= 20
    assert len({record["id"] for record in records}) == len(records)
    first = next(record for record in records if record["id"] == "corpus-english-greetings-0001")
    assert first["messages"] == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]
    for record in records:
        roles = [message["role"] for message in record["messages"]]
        assert roles == [("user", "assistant")[index % 2] for index in range(len(roles))]


def test_corpus_roundtrip(make_store: object, backend: str) -> None:
    lines = corpus_lines(None if backend == "sqlite" else 2)
    store: D1Store = make_store()  # type: ignore[operator]
    stats = Importer(store).run(enumerate(lines, start=1))
    assert stats.threads == len(lines)
    assert stats.skipped == 0

    exported = "".join(export_pieces(store, ExportStats(), thread_page=1000))
    by_id = {record["id"]: record for record in map(json.loads, io.StringIO(exported))}
    assert len(by_id) == len(lines)
    for line in lines:
        original = json.loads(line)
        stored = by_id[original["id"]]
        assert stored["title"] == original["title"]
        assert stored["metadata"] == original["metadata"]
        expected = [(m["role"], m["content"]) for m in original["messages"]]
        assert [(m["role"], m["content"]) for m in stored["messages"]] == expected
        # Byte-exact: the same UTF-8 text, not only equal after normalisation.
        assert [m["content"].encode() for m in stored["messages"]] == [c.encode() for _, c in expected]


@pytest.mark.parametrize("language", ["japanese", "hebrew", "hindi"])
def test_corpus_language_reimport(make_store: object, language: str) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in _language_records(language)]
    store: D1Store = make_store()  # type: ignore[operator]
    Importer(store).run(enumerate(lines, start=1))
    first = "".join(export_pieces(store, ExportStats()))
    Importer(store).run(enumerate(lines, start=1))
    assert "".join(export_pieces(store, ExportStats())) == first


def _language_records(language: str) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for name, category, file in corpus_to_jsonl.corpus_files({language}):
        records.extend(corpus_to_jsonl.dialogue_lines(name, category, file))
    return records
