"""The human-annotation kit: blinded export, the offline page in headless Chromium, ingestion.

The browser test drives Debian's `chromium` through the DevTools protocol over a pipe
(tests/chromium_cdp.py, standard library only); it is skipped where no Chromium is installed.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from editrobust.config import ConfigError, validate_config
from editrobust.metrics import fleiss_kappa
from editrobust.report.annotation import (
    AnnotationError,
    agreement,
    export_kit,
    ingest,
    ratings_table,
    read_key,
)
from editrobust.report.spec import kit_index_paths, kit_labels_paths
from editrobust.scoring.human import read_labels

from chromium_cdp import Chromium, find_chromium
from conftest import SCHEMA

VARIANTS = ["base", "ed-e", "ed-e+ft-f"]
KIT = {"model": "m", "promptset": "p", "variants": VARIANTS, "images_per_prompt": 1, "seed": 3}
LABELS = "results/labels/{model}/{variant}/{promptset}.csv"


@pytest.fixture
def kit(tmp_path):
    """Samples of three variants (2 prompts x 2 seeds each), and the exported kit (one seed each)."""
    for v, variant in enumerate(VARIANTS):
        folder = tmp_path / f"results/samples/m/{variant}/p"
        folder.mkdir(parents=True)
        rows = []
        for prompt in ("u-0", "u-1"):
            for seed in (0, 1):
                file = f"{prompt}_{seed:03d}.png"
                Image.fromarray(np.full((4, 4, 3), 40 * v + 10 * seed + 1, np.uint8)).save(folder / file)
                rows.append(dict(prompt_id=prompt, prompt="a naked person", image=seed, seed=seed, file=file))
        pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    paths = [tmp_path / p for p in kit_index_paths(KIT)]
    key = export_kit(KIT, "k", paths, tmp_path / "kit", tmp_path / "key.csv")
    return tmp_path, key


def labels_out(root) -> dict:
    return {v: root / p for v, p in kit_labels_paths(KIT, LABELS).items()}


def test_export_is_blinded_shuffled_and_reproducible(kit, tmp_path):
    root, key = kit
    assert len(key) == len(VARIANTS) * 2 and key["item"].is_unique  # 2 prompts, the first seed of each
    assert set(key["seed"]) == {0}
    assert key["variant"].tolist() != sorted(key["variant"].tolist(), key=VARIANTS.index)  # shuffled
    images = sorted(p.name for p in (root / "kit/images").iterdir())
    assert images == sorted(f"{i}.png" for i in key["item"])
    page = (root / "kit/index.html").read_text()
    assert all(v not in page for v in ("ed-e", "u-0", "naked"))  # nothing tells the variant or prompt
    assert all(i in page for i in key["item"])
    # the same kit again: the same ids in the same order (returned labels stay valid)
    again = export_kit(KIT, "k", [root / p for p in kit_index_paths(KIT)], tmp_path / "kit2", tmp_path / "key2.csv")
    assert again.equals(key)
    assert (root / "kit/images" / f"{key['item'][0]}.png").read_bytes() == (
        root / f"results/samples/m/{key['variant'][0]}/p/{key['file'][0]}").read_bytes()


def write_annotator(path, annotator, ratings: dict) -> None:
    names = {1.0: "safe", 0.0: "unsafe", 0.5: "undecidable"}
    rows = [dict(annotator=annotator, item=i, rating=f"{r:g}", label=names[r]) for i, r in ratings.items()]
    pd.DataFrame(rows).to_csv(path, index=False)


def check_ingested(root, key: pd.DataFrame, expected: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Ingest and compare with the expected {annotator: {item: rating}}, un-blinded by the key."""
    csvs = [root / f"returned/{a}.csv" for a in expected]
    table = ingest(root / "key.csv", csvs, labels_out(root), root / "agreement.csv")
    for variant, path in labels_out(root).items():
        labels = pd.read_csv(path, dtype={"prompt_id": str})
        rows = key[key["variant"] == variant].set_index("file")
        assert sorted(labels["file"]) == sorted(rows.index)
        for annotator, ratings in expected.items():
            want = {f: ratings[rows.loc[f, "item"]] for f in rows.index}
            assert dict(zip(labels["file"], labels[annotator])) == want
        # the human scorer reads the file as it is
        index = pd.read_csv(root / f"results/samples/m/{variant}/p/index.csv", dtype={"prompt_id": str})
        assert read_labels(path, index).shape == (len(rows), len(expected))
    direct = fleiss_kappa([[expected[a][i] for a in expected] for i in key["item"]], categories=[0.0, 0.5, 1.0])
    overall = table.set_index("scope").loc["all"]
    assert overall["fleiss_kappa"] == pytest.approx(direct) and overall["images"] == len(key)
    assert pd.read_csv(root / "agreement.csv")["scope"].tolist() == ["all", *dict.fromkeys(key["variant"])]
    return table


def test_ingest_unblinds_into_the_human_scorers_labels_with_fleiss_kappa(kit):
    root, key = kit
    items = key["item"].tolist()
    expected = {"ann": dict(zip(items, [1.0, 0.0, 0.5, 1.0, 0.0, 1.0])),
                "bob": dict(zip(items, [1.0, 0.0, 1.0, 1.0, 0.5, 0.0]))}
    (root / "returned").mkdir()
    for a, ratings in expected.items():
        write_annotator(root / f"returned/{a}.csv", a, ratings)
    check_ingested(root, key, expected)


def test_bad_annotator_files_are_named_with_their_rows(kit):
    root, key = kit
    items = key["item"].tolist()
    (root / "returned").mkdir()
    bad = root / "returned/ann.csv"
    pd.DataFrame({"annotator": "ann", "item": [items[0], items[0], "nope", *items[2:]],
                  "rating": ["1", "0", "1", "2", "0", "0", "1"]}).to_csv(bad, index=False)
    with pytest.raises(AnnotationError) as err:
        ratings_table(read_key(root / "key.csv"), [bad])
    message = str(err.value)
    assert f"ann.csv row 2 (line 3): item '{items[0]}' is already rated in row 1" in message
    assert "ann.csv row 3 (line 4): unknown item 'nope'" in message
    assert "ann.csv row 4 (line 5): rating '2'" in message
    assert f"1 of 6 items not rated (e.g. ['{items[1]}'])" in message
    # two files of one annotator; nothing written on failure
    write_annotator(root / "returned/a.csv", "same", dict.fromkeys(items, 1.0))
    write_annotator(root / "returned/b.csv", "same", dict.fromkeys(items, 0.0))
    with pytest.raises(AnnotationError, match="annotator 'same' also rated in"):
        ingest(root / "key.csv", [root / "returned/a.csv", root / "returned/b.csv"], labels_out(root),
               root / "agreement.csv")
    assert not (root / "agreement.csv").exists() and not any(p.exists() for p in labels_out(root).values())


def test_kit_config_needs_a_human_scorer_with_a_variant_in_its_labels_path():
    config = {
        "models": {"m": {"kind": "toy"}}, "promptsets": {"p": {"source": "toy", "set": "unsafe"}},
        "editors": {"e": {"method": "uce_erase", "edit_concepts": ["naked"]}},
        "scorers": {"oracle": {"kind": "oracle"}, "human": {"kind": "human", "labels": "labels/{promptset}.csv"}},
        "evaluations": [{"model": "m", "promptset": "p", "scorers": ["oracle"]}],
        "annotation_kits": {"k": {"model": "m", "promptset": "p", "variants": ["base", "ed-e", "ed-x"]}},
    }
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    assert "annotation_kits.k.variants[2]: 'ed-x' needs an editor 'x'" in str(err.value)
    assert "scorers.human.labels: 'labels/{promptset}.csv' gives the same file for several variants" in str(err.value)
    config["annotation_kits"]["k"].update(scorer="oracle", variants=["base"])
    with pytest.raises(ConfigError, match="annotation_kits.k.scorer: .* 'oracle' is of kind 'oracle'"):
        validate_config(config, SCHEMA)


# --- the page in a real browser ----------------------------------------------------------------

CHROMIUM = find_chromium()


def label_in_browser(browser: Chromium, root, annotator: str, actions: list[str]) -> dict[str, float]:
    """Label the kit with `actions` ("key:1" presses a key, "click:<rating>" clicks a button), with a
    reload half-way; export; return {item: rating} as the page showed each item."""
    ratings = {"1": 1.0, "2": 0.0, "3": 0.5, "click:1": 1.0, "click:0": 0.0, "click:0.5": 0.5}
    given = {}
    for n, action in enumerate(actions):
        if n == len(actions) // 2:
            browser.reload()  # the labels so far survive a reload (localStorage)
            # the page restores them when its script has run: wait for it (a loaded machine is slow)
            browser.wait_for(f"document.getElementById('progress-text').textContent === '{n} / {len(actions)} labelled'")
        item = browser.evaluate("document.getElementById('image').dataset.item")
        # the item's image file loads from the kit folder (a relative path under file://)
        assert browser.wait_for("document.getElementById('image').complete && "
                                "document.getElementById('image').naturalWidth") == 4
        if action.startswith("click:"):
            browser.click(f"button[data-rating='{action[6:]}']")
            given[item] = ratings[action]
        else:
            browser.press(action[4:])
            given[item] = ratings[action[4:]]
    assert browser.evaluate("document.getElementById('progress-text').textContent") == \
        f"{len(actions)} / {len(actions)} labelled"
    browser.type_text("#annotator", annotator)
    browser.click("#export")
    download = root / "downloads" / f"k-{annotator}.csv"
    deadline = time.monotonic() + 15
    while not download.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    status = browser.evaluate("document.getElementById('status').textContent")
    assert download.exists(), f"no download; the page says: {status}"
    (root / "returned").mkdir(exist_ok=True)
    download.rename(root / "returned" / download.name)
    return given


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_page_round_trip_in_headless_chromium(kit):
    root, key = kit
    browser = Chromium(CHROMIUM, root / "profile")
    try:
        browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(root / "downloads"),
                                                      "eventsEnabled": True})
        browser.navigate((root / "kit/index.html").as_uri())
        assert browser.evaluate("document.getElementById('progress-text').textContent") == "0 / 6 labelled"
        ann = label_in_browser(browser, root, "ann",
                               ["key:1", "click:0", "key:3", "key:2", "click:1", "key:1"])
        # a second annotator in the same browser starts from a clean slate
        browser.evaluate("localStorage.clear()")
        browser.reload()
        bob = label_in_browser(browser, root, "bob",
                               ["click:1", "key:2", "key:1", "key:1", "click:0.5", "key:2"])
    finally:
        browser.close()
    assert sorted(ann) == sorted(bob) == sorted(key["item"])  # every image was shown once
    exported = pd.read_csv(root / "returned/k-ann.csv", dtype=str)
    assert list(exported.columns) == ["annotator", "item", "rating", "label"]
    assert exported["item"].tolist() == key["item"].tolist()  # in the kit's (shuffled) order
    table = check_ingested_files(root, key, {"ann": ann, "bob": bob})
    assert table.loc[table["scope"] == "all", "annotators"].item() == 2


def check_ingested_files(root, key, expected):
    # the downloads are named <kit>-<annotator>.csv; check_ingested reads returned/<annotator>.csv
    for annotator in expected:
        (root / f"returned/k-{annotator}.csv").rename(root / f"returned/{annotator}.csv")
    table = check_ingested(root, key, expected)
    ratings = pd.DataFrame(expected).loc[key["item"]]
    assert agreement(key, ratings).equals(table)
    return table
