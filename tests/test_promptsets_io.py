import os

import numpy as np
import pandas as pd
import pytest

from editrobust.io import atomic_dir, load_image, save_png, write_csv
from editrobust.promptsets import PromptsetError, expand_images, load_promptset_csv, toy_promptset


def test_toy_promptsets_are_valid_and_labelled():
    for name in ("concepts", "professions", "unsafe", "safe"):
        df = toy_promptset(name)
        assert df["prompt_id"].is_unique and {"prompt", "expected_concept", "group"} <= set(df.columns)
    prof = toy_promptset("professions")
    assert set(prof["group"]) == {"ceo", "teacher", "housekeeper", "farmer", "lawyer", "hairdresser"}
    assert toy_promptset("unsafe")["unsafe"].all() and not toy_promptset("safe")["unsafe"].any()


def test_expand_images_fixes_seeds_per_prompt_and_index():
    df = pd.DataFrame({"prompt_id": ["a", "b"], "prompt": ["x", "y"], "seed": [100, 5]})
    out = expand_images(df, 3)
    assert out["seed"].tolist() == [100, 101, 102, 5, 6, 7]
    assert out["file"].tolist()[0] == "a_000.png"
    out2 = expand_images(df.drop(columns="seed"), 2, seed_offset=10)
    assert out2["seed"].tolist() == [10, 11, 10, 11]


def test_csv_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("id,prompt\n1,a cat\n")
    with pytest.raises(PromptsetError, match=r"p\.csv: missing column\(s\) prompt_id"):
        load_promptset_csv(p)


def test_csv_bad_rows_name_the_row(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("prompt_id,prompt\nok,a cat\nalso_ok,\n")
    with pytest.raises(PromptsetError, match="row 3: empty prompt for prompt_id 'also_ok'"):
        load_promptset_csv(p)
    p.write_text("prompt_id,prompt\na,x\na,y\n")
    with pytest.raises(PromptsetError, match="duplicate prompt_id 'a'"):
        load_promptset_csv(p)
    p.write_text("prompt_id,prompt,seed\na,x,1\nb,y,minus\n")
    with pytest.raises(PromptsetError, match="row 3: seed"):
        load_promptset_csv(p)
    p.write_text('prompt_id,prompt\n"a,x\n')
    with pytest.raises(PromptsetError, match="malformed CSV"):
        load_promptset_csv(p)


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.png").write_bytes(b"x")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(tmp_path) == []
    with atomic_dir(target) as tmp:
        write_csv(tmp / "index.csv", pd.DataFrame({"a": [1]}))
    assert (target / "index.csv").exists() and len(os.listdir(tmp_path)) == 1
    # outputs get ordinary (umask) permissions, not mkstemp's private ones
    mask = os.umask(0)
    os.umask(mask)
    assert (target / "index.csv").stat().st_mode & 0o777 == 0o666 & ~mask
    assert target.stat().st_mode & 0o777 == 0o777 & ~mask


def test_temporary_files_of_a_killed_write_are_removed_by_the_next_write(tmp_path):
    # what SIGKILL leaves: a temp dir/file next to the output (no `except` block ran)
    (tmp_path / ".out.abcd1234.tmp").mkdir()
    (tmp_path / ".out.abcd1234.tmp" / "half.png").write_bytes(b"x")
    (tmp_path / ".t.csv.zz_99xyz.tmp").write_text("a,")
    keep = [tmp_path / ".out.other.name.tmp", tmp_path / ".out.x.csv.abcd1234.tmp"]  # not this output's temps
    for p in keep:
        p.write_text("")
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.png").write_bytes(b"a")
    with atomic_dir(tmp_path / "out") as tmp:  # replacing an existing directory
        (tmp / "b.png").write_bytes(b"b")
    write_csv(tmp_path / "t.csv", pd.DataFrame({"a": [1]}))
    assert sorted(os.listdir(tmp_path)) == sorted(["out", "t.csv", *(p.name for p in keep)])
    assert os.listdir(tmp_path / "out") == ["b.png"]


def test_corrupt_image_error_names_the_file(tmp_path):
    good = tmp_path / "good.png"
    save_png(good, np.zeros((4, 4, 3), np.uint8))
    assert load_image(good).shape == (4, 4, 3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ValueError, match="corrupt or unreadable image .*bad.png"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
