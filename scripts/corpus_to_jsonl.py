"""Convert the chatterbot-corpus dialogues into d1store's import format.

The corpus (PyPI package ``chatterbot-corpus``, BSD licence) ships YAML
files of short dialogues in about 25 languages, one folder per language and
one file per category. Each dialogue becomes one JSON line::

    {"id": "corpus-english-greetings-0001", "title": "english/greetings #1",
     "metadata": {"language": "english", "category": "greetings", "categories": ["greetings"]},
     "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]}

Turns alternate user, assistant, user, ... starting with the user. Ids are
built from the language, the category and the dialogue's position in its
file, so converting the same corpus version again gives the same ids, and
two identical dialogues stay two threads. YAML scalars are read as plain
strings (no ``yes`` to ``true`` or number conversion), so every text is
kept exactly as written in the corpus. A few dialogues in the corpus are a
single string instead of a list (a YAML formatting slip); they are kept as
one user message.

Usage: ``python scripts/corpus_to_jsonl.py OUTPUT.jsonl [--language NAME ...]``
(``-`` writes to stdout).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from importlib import resources
from importlib.abc import Traversable
from typing import Any, TextIO

import yaml

ROLES = ("user", "assistant")


def corpus_root() -> Traversable:
    """Return the folder of the installed corpus's YAML files."""
    return resources.files("chatterbot_corpus") / "data"


def corpus_files(languages: set[str] | None = None) -> Iterator[tuple[str, str, Traversable]]:
    """Yield ``(language, category, file)`` for every YAML file, sorted by name."""
    for folder in sorted(corpus_root().iterdir(), key=lambda item: item.name):
        if not folder.is_dir() or (languages and folder.name not in languages):
            continue
        for file in sorted(folder.iterdir(), key=lambda item: item.name):
            if file.name.endswith((".yml", ".yaml")):
                yield folder.name, file.name.rsplit(".", 1)[0], file


def dialogue_lines(language: str, category: str, file: Traversable) -> Iterator[dict[str, Any]]:
    """Yield one import record per dialogue of ``file``."""
    # BaseLoader reads every scalar as a string; the C version is used when
    # PyYAML was built with libyaml.
    loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)
    document = yaml.load(file.read_text(encoding="utf-8"), Loader=loader)
    categories = list(document.get("categories") or [category])
    for position, dialogue in enumerate(document.get("conversations") or [], start=1):
        turns = [dialogue] if isinstance(dialogue, str) else list(dialogue)
        yield {
            "id": f"corpus-{language}-{category}-{position:04d}",
            "title": f"{language}/{category} #{position}",
            "metadata": {"language": language, "category": category, "categories": categories},
            "messages": [{"role": ROLES[index % 2], "content": text} for index, text in enumerate(turns)],
        }


def write_corpus(output: TextIO, languages: set[str] | None = None) -> int:
    """Write every dialogue as one JSON line to ``output``; return the number of lines."""
    count = 0
    for language, category, file in corpus_files(languages):
        for record in dialogue_lines(language, category, file):
            output.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Convert chatterbot-corpus into d1store JSON Lines.")
    parser.add_argument("output", help="file to write, or - for stdout")
    parser.add_argument(
        "--language", action="append", help="convert only this language folder (repeatable; default: all)"
    )
    args = parser.parse_args(argv)
    languages = set(args.language) if args.language else None
    if args.output == "-":
        count = write_corpus(sys.stdout, languages)
    else:
        with open(args.output, "w", encoding="utf-8") as output:
            count = write_corpus(output, languages)
    print(f"wrote {count} conversations to {args.output}", file=sys.stderr)
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
