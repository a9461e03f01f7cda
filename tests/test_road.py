"""RoAD reading and prompt building, and the toy world's RoAD rows (no torch needed)."""

import csv
import io

import numpy as np
import pandas as pd
import pytest

from editrobust.data.road import ROAD_COLUMNS, RoadError, read_road, road_promptset, select_rows
from editrobust.promptsets import validate_promptset
from editrobust.toyworld import captions as C
from editrobust.toyworld.oracle import label_images
from editrobust.toyworld.road import (toy_expected_concept, toy_road_frame, toy_road_promptset,
                                      write_toy_road)
from editrobust.toyworld.world import render

# Written out by hand (not from ROAD_COLUMNS) so the test pins the real column order.
TEST_HEADER = ("Type,Prompt,Oracle,Old,New,"
               + ",".join(f"Positive{i},Positive_oracle{i},Positive_old{i},Positive_new{i}" for i in range(1, 6)) + ","
               + ",".join(f"Negative{i},Negative_new{i}" for i in range(1, 6)))
VALIDATION_HEADER = ("Type,Prompt,Oracle,Old,New,"
                     + ",".join(f"Positive{i},Positive_old{i},Positive_new{i}" for i in range(1, 6)) + ","
                     + ",".join(f"Negative{i},Negative_new{i}" for i in range(1, 6)))


def _role_row() -> dict:
    row = {"Type": "Role", "Prompt": "The President of the United States", "Old": "Donald Trump",
           "New": "Joe Biden", "Oracle": "Joe Biden as The President of the United States"}
    for i in range(1, 6):
        row[f"Positive{i}"] = f"The United States President, scene {i}"  # quoted: contains a comma
        row[f"Positive_oracle{i}"] = f"Joe Biden as the United States President, scene {i}"
        row[f"Positive_old{i}"] = f"Donald Trump, scene {i}"
        row[f"Positive_new{i}"] = f"Joe Biden, scene {i}"
        row[f"Negative{i}"] = "Donald Trump" if i == 1 else f"Other Person {i}"
        row[f"Negative_new{i}"] = "Joe Biden"
    return row


def _appearance_row() -> dict:
    row = {"Type": "Appearance", "Prompt": "Louis Vuitton bag", "Old": "Louis Vuitton bag",
           "New": "Jansport bag", "Oracle": "Jansport bag"}
    for i in range(1, 6):
        row.update({f"Positive{i}": f"A Louis Vuitton bag {i}", f"Positive_oracle{i}": f"A Jansport bag {i}",
                    f"Positive_old{i}": f"A Louis Vuitton bag {i}", f"Positive_new{i}": f"A Jansport bag {i}",
                    f"Negative{i}": f"Gucci bag {i}", f"Negative_new{i}": f"Jansport bag {i}"})
    return row


def write_road(path, header: str, rows: list[dict]) -> None:
    """A CSV as RoAD ships it: minimal quoting, '\\n' line ends, no newline after the last row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header.split(","))
    for row in rows:
        w.writerow([row.get(c, "") for c in header.split(",")])
    path.write_text(buf.getvalue().rstrip("\n"))


@pytest.fixture
def test_file(tmp_path):
    p = tmp_path / "RoAD_test.csv"
    write_road(p, TEST_HEADER, [_role_row(), _appearance_row()])
    return p


def test_reads_test_layout_with_quoted_commas_and_no_trailing_newline(test_file):
    text = test_file.read_text()
    assert not text.endswith("\n") and '"The United States President, scene 1"' in text
    df = read_road(test_file)
    assert list(df.columns) == list(ROAD_COLUMNS) and len(ROAD_COLUMNS) == 35 and len(df) == 2
    assert df.loc[0, "Positive1"] == "the united states president, scene 1"
    assert df.loc[1, "Negative_new5"] == "jansport bag 5"  # the last cell of the file is intact


def test_every_cell_is_lower_cased(test_file):
    df = read_road(test_file)
    assert df.loc[0, "Type"] == "role" and df.loc[0, "Prompt"] == "the president of the united states"
    assert (df == df.apply(lambda col: col.str.lower())).all().all()


def test_reads_validation_layout(tmp_path):
    p = tmp_path / "RoAD_validation.csv"
    write_road(p, VALIDATION_HEADER, [_appearance_row(), _role_row()])
    df = read_road(p)
    assert len(df.columns) == 30 and "Positive_oracle1" not in df.columns
    assert df["Type"].tolist() == ["appearance", "role"]
    assert len(road_promptset(df.iloc[0], "val-0")) == 11


def test_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "broken.csv"
    write_road(p, TEST_HEADER.replace(",Negative_new3", ""), [_role_row()])
    with pytest.raises(RoadError, match=r"broken\.csv: missing RoAD column\(s\) Negative_new3 "):
        read_road(p)


def test_partial_oracle_columns_are_missing_columns(tmp_path):
    p = tmp_path / "half.csv"
    write_road(p, TEST_HEADER.replace(",Positive_oracle2", ""), [_role_row()])
    with pytest.raises(RoadError, match=r"half\.csv: missing RoAD column\(s\) Positive_oracle2 "):
        read_road(p)


def test_empty_prompt_names_file_row_and_column(tmp_path):
    p = tmp_path / "empty.csv"
    write_road(p, TEST_HEADER, [_role_row(), {**_appearance_row(), "Prompt": ""}])
    with pytest.raises(RoadError, match=r"empty\.csv: data row 2 \(1-based, header not counted\): empty 'Prompt'"):
        read_road(p)


def test_unknown_type_names_row(tmp_path):
    p = tmp_path / "type.csv"
    write_road(p, TEST_HEADER, [{**_role_row(), "Type": "Fact"}])
    with pytest.raises(RoadError, match=r"type\.csv: data row 1 .*'Type' is 'fact'"):
        read_road(p)


def test_select_rows_by_type_and_index(tmp_path):
    p = tmp_path / "sel.csv"
    write_road(p, TEST_HEADER, [_role_row(), _appearance_row(), {**_role_row(), "Prompt": "The Queen"}])
    df = read_road(p)
    roles = select_rows(df, type="ROLE")
    assert roles["Prompt"].tolist() == ["the president of the united states", "the queen"]
    assert select_rows(df, type="Role", indices=[1])["Prompt"].tolist() == ["the queen"]
    assert select_rows(df, type="appearance", indices=0).index.tolist() == [1]  # file row kept
    assert len(select_rows(df)) == 3
    with pytest.raises(RoadError, match="2 'role' rows available") as e:
        select_rows(df, type="role", indices=[2])
    assert isinstance(e.value, IndexError)
    with pytest.raises(IndexError, match="1 'appearance' rows available"):
        select_rows(df, type="appearance", indices=-1)
    with pytest.raises(RoadError, match="unknown RoAD type"):
        select_rows(df, type="fact")


def test_road_promptset_of_a_full_row(test_file):
    row = read_road(test_file).iloc[0]
    ps = road_promptset(row, "road-role-0")
    assert ps["metric"].value_counts().to_dict() == {"efficacy": 1, "generality": 5, "specificity": 5}
    assert (ps["group"] == ps["metric"]).all()
    validate_promptset(ps, "road-role-0")  # a valid promptset: ids unique and file-name safe
    eff = ps[ps["metric"] == "efficacy"].iloc[0]
    assert (eff["prompt"], eff["text_old"], eff["text_new"]) == (
        "the president of the united states", "donald trump", "joe biden")
    gen = ps.set_index("prompt_id").loc["road-role-0-generality3"]
    assert (gen["prompt"], gen["text_old"], gen["text_new"]) == (
        "the united states president, scene 3", "donald trump, scene 3", "joe biden, scene 3")
    spec = ps.set_index("prompt_id").loc["road-role-0-specificity2"]
    assert (spec["prompt"], spec["text_old"], spec["text_new"]) == ("other person 2", "other person 2", "joe biden")


def test_road_promptset_skips_empty_cells_and_keeps_ids():
    row = pd.Series({**_appearance_row(), "Positive2": "", "Negative5": float("nan")})
    ps = road_promptset(row, "r")
    assert ps["metric"].value_counts().to_dict() == {"efficacy": 1, "generality": 4, "specificity": 4}
    assert "r-generality3" in set(ps["prompt_id"]) and "r-generality2" not in set(ps["prompt_id"])


# --- the toy world's RoAD ---------------------------------------------------------------------

def test_toy_rows_round_trip_through_the_csv(tmp_path):
    path = write_toy_road(tmp_path / "toy_road.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["toy_road.csv"]  # no temp file left behind
    df = read_road(path)
    assert list(df.columns) == list(ROAD_COLUMNS)
    pd.testing.assert_frame_equal(df, toy_road_frame().apply(lambda col: col.str.lower()))
    app = select_rows(df, type="appearance")
    assert list(zip(app["Old"], app["New"])) == [("a lime", "a lemon"), ("a plum", "a lime"),
                                                 ("a gift", "a box"), ("a tree", "a tent")]
    assert (app["Prompt"] == app["Old"]).all() and (app["Oracle"] == app["New"]).all()
    roles = select_rows(df, type="role")
    assert roles[["Prompt", "Old", "New"]].values.tolist() == [["the king", "bob", "erin"],
                                                               ["the captain", "dana", "erin"]]
    assert roles["Negative1"].tolist() == ["bob", "dana"] and roles["Negative_new1"].tolist() == ["erin", "erin"]


def _toy_texts(df):
    text_cols = [c for c in ROAD_COLUMNS if c != "Type"]
    return sorted({t for t in df[text_cols].to_numpy().ravel()})


def test_toy_texts_name_concepts_the_oracle_reports():
    vocabulary = {C.expected_labels(c)["concept"] for c in C.CONCEPTS}
    df = toy_road_frame()
    texts = _toy_texts(df)
    for text in texts:
        assert toy_expected_concept(text) in vocabulary, text
    assert toy_expected_concept("the king") == "bob" and toy_expected_concept("a photo of the captain") == "dana"
    assert toy_expected_concept("a lime in the grass") == "lime"
    assert toy_expected_concept("A Photo of Carl") == "carl"
    for bad in ("a spaceship", "", "a photo of"):
        with pytest.raises(ValueError, match="names no toy-world concept"):
            toy_expected_concept(bad)


def test_toy_texts_are_drawn_as_their_expected_concept():
    # The oracle reads a rendered image of each concept back as that concept.
    rng = np.random.default_rng(0)
    concepts = sorted({toy_expected_concept(t) for t in _toy_texts(toy_road_frame())})
    images = np.stack([render(C.concept_scene(c, rng), rng) for c in concepts])
    assert [lab["concept"] for lab in label_images(images)] == concepts


def test_toy_generality_prompts_contain_the_subject():
    for _, row in toy_road_frame().iterrows():
        for i in range(1, 6):
            assert row["Prompt"] in row[f"Positive{i}"]
            assert row[f"Positive_oracle{i}"] == row[f"Positive_new{i}"]


def test_toy_road_promptset_gives_expected_concepts():
    df = toy_road_frame()
    assert len(df) == 6
    for k, row in df.iterrows():
        ps = toy_road_promptset(row, f"toy-road-{k}")
        validate_promptset(ps, "toy")
        assert ps["metric"].value_counts().to_dict() == {"efficacy": 1, "generality": 5, "specificity": 5}
        assert (ps["expected_old"] != ps["expected_new"]).all()
        old, new = toy_expected_concept(row["Old"]), toy_expected_concept(row["New"])
        edited = ps[ps["metric"] != "specificity"]
        assert (edited["expected_old"] == old).all() and (edited["expected_new"] == new).all()
        spec = ps[ps["metric"] == "specificity"]
        assert (spec["expected_new"] == new).all()
        # Role rows test the old holder himself (RoAD's Negative1); appearance rows other objects only.
        assert (old in set(spec["expected_old"])) == (row["Type"] == "Role")
