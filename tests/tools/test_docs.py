"""The contract is in the repository: code and docs cite docs/design.md (never the team's old DESIGN.md), every
cited section anchor exists, every relative link of the README and docs/ leads to a file of the tree, and every
test file the docs name is where they say."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DESIGN = REPO / "docs" / "design.md"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else [str(p.relative_to(REPO)) for p in REPO.rglob("*")]
    suffixes = {".py", ".md", ".h", ".cc", ".cu", ".cuh", ".txt", ".cmake", ".sh", ".toml"}
    return [REPO / n for n in names if Path(n).suffix in suffixes and (REPO / n).is_file()
            and not n.startswith(("build/", ".git/"))]


def test_code_and_docs_cite_design_md_by_existing_anchors():
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', DESIGN.read_text()))
    assert {"rule-1", "rule-2", "rule-2b", "rule-3", "rule-4", "rule-5", "hardening"} <= anchors
    cited, stale = [], []
    for path in tracked_text_files():
        text = path.read_text(errors="replace")
        if "DESIGN.md" in text and path not in (DESIGN, Path(__file__).resolve()):
            stale.append(str(path.relative_to(REPO)))
        cited += [(path, a) for a in re.findall(r"design\.md#([A-Za-z0-9_-]+)", text)]
    assert not stale, f"cite docs/design.md instead of DESIGN.md in {stale}"
    assert cited, "nothing cites a section of docs/design.md"
    missing = [(str(p.relative_to(REPO)), a) for p, a in cited if a not in anchors]
    assert not missing, f"anchors not in docs/design.md: {missing}"


def test_relative_links_of_the_docs_lead_to_files():
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_test_files_named_in_docs_and_scripts_exist():
    """tests/ is in folders by level: a doc or script naming tests/x.py after a move would send readers nowhere."""
    named = []
    for path in tracked_text_files() + [REPO / ".ci" / "run"]:
        if path.suffix in (".md", ".sh", ".toml", "") or path.parent.name in ("benchmarks", "scripts"):
            named += [(path, m) for m in re.findall(r"\btests/[\w/]+\.(?:py|cc)\b", path.read_text(errors="replace"))]
    assert named, "no doc names a test file"
    missing = [f"{p.relative_to(REPO)} -> {m}" for p, m in named if not (REPO / m).is_file()]
    assert not missing, missing
