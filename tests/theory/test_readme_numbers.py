"""Every result number of Theory/README.md (and of the top-level README's Theory paragraph)
is the committed run's: rendered again from Plots/theory_numbers.json and compared."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sgtheory.theory import report

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "Theory" / "README.md"
RECORD = json.loads((ROOT / "Theory" / "Plots" / "theory_numbers.json").read_text())
FULL = json.loads((ROOT / "Theory" / "Plots" / report.FULL).read_text())


@pytest.mark.parametrize("name", [*report.BLOCKS, "learning_full"])
def test_every_numbers_block_is_rendered_from_the_json(name):
    blocks = report.readme_blocks(README.read_text())
    assert name in blocks, f"Theory/README.md has no numbers block {name}"
    assert blocks[name] == report.render_block(name, RECORD, FULL)


def test_full_learning_record_is_the_full_study_of_the_defaults():
    from sgtheory.theory import learning

    assert FULL["size"] == "full" and FULL["nb_inits"] == RECORD["settings"]["learning_inits"]
    assert FULL["beta"] == RECORD["settings"]["beta"]
    tasks = [t.name for t in learning.tasks_for("full")]
    rates = learning.SCHEDULES["full"].learning_rates
    assert list(FULL["tasks"]) == [f"{t} lr={lr:g}" for t in tasks for lr in rates]


def test_results_prose_holds_no_numbers_of_its_own():
    """Outside the blocks, the results sections state no measured number (decimals)."""
    text = README.read_text()
    results = text[text.index("## Results") : text.index("## Tests")]
    prose = report.MARKER.sub("", results)
    assert not re.findall(r"\d\.\d|\de-\d", prose)


def test_top_level_paragraph_is_rendered_from_the_json():
    """The same words and numbers (line breaks aside)."""
    flat = " ".join((ROOT / "README.md").read_text().split())
    assert " ".join(report.top_paragraph(RECORD).split()) in flat


def test_json_is_the_default_run():
    from dataclasses import asdict

    from sgtheory.theory.study import StudySettings

    assert RECORD["settings"] == json.loads(json.dumps(asdict(StudySettings())))


def test_number_format():
    assert report.sig(6.245e-16) == "6.2e-16"  # rounded, not truncated
    assert report.sig(0.6704) == "0.67"
    assert report.sig(122.6) == "123"
    assert report.sig(0.0001234) == "1.2e-4"
