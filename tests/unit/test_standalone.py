"""The repository stands alone: no tracked file reads, names or links a document or folder
that lives outside it (a sibling checkout's notes, a parent directory's fixtures). What the
code relies on is in docs/ and tests/fixtures/.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Built from pieces so that this file does not match itself.
OUTSIDE = re.compile(
    "|".join(
        [
            r"\.\./" + "shared",
            "shared" + r"/fixtures",
            r"\b(SPEC|DESIGN|PROVIDERS|PROVIDER-APIS|STYLE)" + r"\.md\b",
            r"\b(SPEC|DESIGN) " + "§",
            r"/work/" + "shared",
        ]
    )
)


def tracked_text_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    paths = [ROOT / name for name in out.decode().split("\0") if name]
    return [p for p in paths if p.is_file() and p.suffix not in {".png", ".jar"}]


def test_the_walk_sees_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in tracked_text_files()}
    assert {"README.md", "setup.cfg", "docs/architecture.md", "docs/providers.md"} <= names


def test_no_file_names_anything_outside_the_repository() -> None:
    hits = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not hits, "files that point outside the repository:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_claims() -> None:
    for bad in ["see ../" + "shared/x", "DESIGN" + ".md invariant 1", "SPEC " + "§5"]:
        assert OUTSIDE.search(bad), bad
    assert not OUTSIDE.search("docs/architecture.md, invariant 1")
