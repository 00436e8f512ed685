"""The READMEs and docs are written for users: within their line limits, free of development
history, and every relative link points at a file (and heading) of the repository.

Development history (issue numbers, development rounds, "previously", comparisons with
earlier versions of this code, sessions) lives in git and in benchmarks/results/, not here.
A commit hash may appear only in a table column headed "commit", where it says which code a
measured figure belongs to. Each check is shown to fail on a planted offender.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "README.md"
EXPERIMENTS = [
    ROOT / name / "README.md"
    for name in ("Classification", "Spike_train_matching", "Theory", "Sigmoid_network")
]
DOCS = sorted((ROOT / "docs").glob("*.md"))
FILES = [TOP, *EXPERIMENTS, *DOCS]
LIMITS = {TOP: 200, **{path: 250 for path in EXPERIMENTS}}

# Commits of the original code that the comparisons name (not of this repository).
ORIGINAL_COMMITS = {"6dd5824"}  # stork, SG_theory branch

HISTORY = {
    "an issue number": r"\bissues?\s*#?\d+",
    "a development round": r"\b(?:development|dev)\s+rounds?\b|\brounds?\s+\d+\b",
    "'previously'": r"\bpreviously\b",
    "an earlier version of this code": (
        r"\bprevious\s+(?:stop|code|version|commit|round|model|release)s?\b"
        r"|\bearlier\s+(?:stop|code|version|commit|round)s?\b"
        r"|\bversions?\s+(?:before|of this code)\b|\bold code\b"
    ),
    "a change narrated": r"\bused to\b|\bno longer\b|\bsince fixed\b|\bfixed since\b",
    "a session": r"\bsessions?\b",
    "an A/B run": r"\bA/B\b",
    "'now'": r"(?<![\w{$])now\b(?!:)",
}
HASH = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SEPARATOR = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def cells(line: str) -> list[str]:
    """The cells of a markdown table row (escaped pipes stay inside their cell)."""
    row = line.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)]


def history_markers(text: str) -> list[str]:
    """Every development-history marker of `text`, as 'line N: what (the text found)'."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in HISTORY.items():
            for match in re.finditer(pattern, line, re.IGNORECASE):
                found.append(f"line {number}: {what} ({match.group(0)!r})")
    return found + misplaced_hashes(text)


def misplaced_hashes(text: str) -> list[str]:
    """Commit hashes outside a table column headed 'commit' (the original's commits aside)."""
    found, header, lines = [], None, text.splitlines()
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        is_row = stripped.startswith("|")
        if not is_row:
            header = None
        elif header is None and number < len(lines) and SEPARATOR.match(lines[number].strip()):
            header = [cell.lower() for cell in cells(stripped)]
        if is_row and header is not None and not SEPARATOR.match(stripped):
            parts = [
                (cell, header[i] if i < len(header) else "")
                for i, cell in enumerate(cells(stripped))
            ]
        else:
            parts = [(line, "")]
        for part, column in parts:
            for match in HASH.finditer(part):
                if "commit" not in column and match.group(0) not in ORIGINAL_COMMITS:
                    found.append(
                        f"line {number}: a commit hash outside a commit column ({match.group(0)})"
                    )
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown file's headings (outside code fences)."""
    found, fenced = set(), False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.add(slug(line.lstrip("#")))
    return found


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links of the markdown file `path` whose file or heading does not exist."""
    broken = []
    for match in LINK.finditer(text):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    return broken


def name(path: Path) -> str:
    """The path as the test ids and messages show it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@pytest.mark.parametrize("path", list(LIMITS), ids=name)
def test_readme_within_its_line_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= LIMITS[path], f"{name(path)} has {lines} lines; at most {LIMITS[path]}"


@pytest.mark.parametrize("path", FILES, ids=name)
def test_no_development_history(path):
    found = history_markers(path.read_text())
    assert not found, f"{name(path)}:\n" + "\n".join(found)


@pytest.mark.parametrize("path", FILES, ids=name)
def test_relative_links_point_at_existing_files(path):
    broken = broken_links(path, path.read_text())
    assert not broken, f"{name(path)}:\n" + "\n".join(broken)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=name)
def test_experiment_readme_lists_the_differences_from_the_original(path):
    assert "## Differences from the original code" in path.read_text()


def test_top_readme_holds_the_install_and_ci_test_commands():
    lines = TOP.read_text().splitlines()
    assert "python3 -m pytest -q" in lines  # .ci/run runs this line
    assert "python3 -m pip install -r requirements.txt" in lines


PLANTED = [
    "This was fixed in issue 12.",
    "See Issue #25 for the data.",
    "In development round 3 the scan moved.",
    "Round 2 measured 1.9x.",
    "Previously the step took 2 s.",
    "The previous stop's code gave 1.88x.",
    "Earlier versions of this code clipped to step 49.",
    "Stochastic runs draw other numbers than versions before this generator.",
    "The old code took 61 ms per epoch.",
    "The readout used to start at 0.",
    "This session's code rounds differently.",
    "A/B against the last release.",
    "The generator now follows the original's construction.",
    "The default command took 38 min at commit c986bc7.",
    "| what | figure |\n|---|---|\n| a step | 0.3 s (c986bc7) |",
]
CLEAN = [
    "The scan draws inside its loop and rounds to 1 in float32 only for huge tau.",
    "Runs/${now:%Y-%m-%d}/seed=1",
    "| what | figure | commit |\n|---|---|---|\n| a step | 0.3 s | c986bc7 |",
    "| what | commit |\n|---|---|\n| a ratio | f56776b (ratio: c986bc7) |",
    "Compared with stork (SG_theory branch, commit 6dd5824).",
    "An earlier run in the folder is moved aside.",
]


@pytest.mark.parametrize("text", PLANTED)
def test_history_check_catches_a_planted_offender(text):
    assert history_markers(text), text


@pytest.mark.parametrize("text", CLEAN)
def test_history_check_passes_what_a_user_needs(text):
    assert not history_markers(text), history_markers(text)


def test_link_check_catches_planted_broken_links(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Speed table\n")
    page = tmp_path / "README.md"
    good = (
        "[a](docs/other.md) [b](docs/other.md#speed-table) [c](#top-heading) [d](https://x.org/y)"
    )
    page.write_text(f"# Top heading\n\n{good}\n")
    assert broken_links(page, page.read_text()) == []
    for bad in ("[a](docs/none.md)", "[b](docs/other.md#no-such)", "[c](#nowhere)", "![i](x.png)"):
        page.write_text(f"# Top heading\n\n{bad}\n")
        assert len(broken_links(page, page.read_text())) == 1, bad


def test_line_limit_check_catches_a_planted_long_readme(tmp_path, monkeypatch):
    long = tmp_path / "README.md"
    long.write_text("line\n" * 201)
    monkeypatch.setitem(LIMITS, long, 200)
    with pytest.raises(AssertionError, match="201 lines; at most 200"):
        test_readme_within_its_line_limit(long)
