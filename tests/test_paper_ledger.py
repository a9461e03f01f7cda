"""The settings ledger (config/README.md, "Settings ledger"): every row whose "ours" is a value in
backticks (a number or a name) holds that value at its key in config/paper.yaml, every departure
says why, and the counts the README states are the table's."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import yaml

from editrobust.config import load_yaml, validate_config

COLUMNS = ["#", "setting", "study", "ours", "key", "status", "source, or departure: why"]
STATUSES = ("match", "departure", "open")
COUNTS = re.compile(r"\*\*(\d+) settings: (\d+) match, (\d+) documented departures, (\d+) left open by the study\.\*\*")
SEGMENT = re.compile(r'\.?([A-Za-z0-9_]+)|\["([^"]+)"\]')


def ledger(readme: str) -> tuple[str, list[dict]]:
    """(the section's text, its rows as {column: cell}) of the ledger in config/README.md."""
    start = readme.index("### Settings ledger")
    end = re.search(r"^#{2,3} ", readme[start + 4:], re.M)
    section = readme[start:start + 4 + end.start()] if end else readme[start:]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == COLUMNS, header
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(COLUMNS), f"ledger row with {len(cells)} cells: {line}"
        rows.append(dict(zip(COLUMNS, cells)))
    return section, rows


def lookup(config: dict, expression: str):
    """The value of a ledger key: a dotted path (`a.b["c.d"]`), `a->b` to read key `b` of the YAML
    file whose path is at `a`, and `len(...)` to count items."""
    counted = re.fullmatch(r"len\((.*)\)", expression)
    if counted:
        return len(lookup(config, counted.group(1)))
    node = config
    for part in expression.split("->"):
        if node is not config:  # the previous part named a YAML file (relative to the workdir)
            node = load_yaml(node)
        pos = 0
        while pos < len(part):
            m = SEGMENT.match(part, pos)
            assert m and m.end() > pos, f"bad key {expression!r} at {part[pos:]!r}"
            key = m.group(1) or m.group(2)
            assert isinstance(node, dict) and key in node, f"{expression}: no key {key!r}"
            node, pos = node[key], m.end()
    return node


def same(expected, actual) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-12)
    return expected == actual


@pytest.fixture(scope="module")
def paper(repo):
    return validate_config(load_yaml(repo / "config" / "paper.yaml"))


@pytest.fixture(scope="module")
def rows(repo):
    return ledger((repo / "config" / "README.md").read_text())[1]


def test_ledger_rows_are_well_formed(rows):
    assert [int(r["#"]) for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        where = f"ledger row {r['#']} ({r['setting']})"
        assert r["status"] in STATUSES, where
        assert r["setting"] and r["study"] and r["ours"] and r["source, or departure: why"], where
        assert r["source, or departure: why"].startswith("departure:") == (r["status"] == "departure"), where
        # a value to check, in backticks, exactly when there is a key to check it at
        assert (r["key"] != "—") == r["ours"].startswith("`"), where


def test_every_value_row_holds_in_paper_yaml(rows, paper, repo, monkeypatch):
    monkeypatch.chdir(repo)  # `->` files are relative to the workdir, as in the workflow
    checked, wrong = 0, []
    for r in rows:
        if r["key"] == "—":
            continue
        expected = yaml.safe_load(re.match(r"`([^`]*)`", r["ours"]).group(1))
        actual = lookup(paper, r["key"].strip("`"))
        checked += 1
        if not same(expected, actual):
            wrong.append(f"row {r['#']} ({r['setting']}): ledger {expected!r}, {r['key']} is {actual!r}")
    assert not wrong, "\n".join(wrong)
    assert checked >= 90  # most rows are numbers or names: the ledger cannot drift from the config silently


def test_the_stated_counts_are_the_table_s(repo, rows):
    section, _ = ledger((repo / "config" / "README.md").read_text())
    stated = COUNTS.search(section)
    assert stated, "the ledger states its counts: **N settings: a match, b documented departures, c left open ...**"
    counts = Counter(r["status"] for r in rows)
    assert [int(x) for x in stated.groups()] == [len(rows), counts["match"], counts["departure"], counts["open"]]


def test_lookup_reads_paths_files_and_counts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v.yaml").write_text("concepts: [a, b, c]\n")
    config = {"editors": {"x": {"vocabulary": "v.yaml", "n": 3}}, "files": {"a.csv": {"rows": 9}}}
    assert lookup(config, "editors.x.n") == 3
    assert lookup(config, 'files["a.csv"].rows') == 9
    assert lookup(config, "len(editors.x.vocabulary->concepts)") == 3
    with pytest.raises(AssertionError, match="no key 'm'"):
        lookup(config, "editors.x.m")
    assert same(1.0e-5, 1e-05) and same(4, 4.0) and not same(True, 1) and not same(0.1, 0.2)
