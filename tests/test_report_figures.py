"""Report figures on small synthetic inputs: comparison grid, Figure-3 bars, persistence curve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from editrobust.config import ConfigError, validate_config
from editrobust.metrics import female_share, gender_delta
from editrobust.report import build_figure
from editrobust.report.render import write_figure
from editrobust.report import FIGURES, input_paths, resolve
from editrobust.report.spec import FigureInputError
from editrobust.tables import ScoreKey, build_table, write_table
from editrobust.tables import resolve as resolve_table

from conftest import SCHEMA, write_edit_record

FINETUNERS = ("full", "lora")
RECORD = "results/models/m/ed-e/variant.json"
VARIANTS = ["base", "ed-e"] + [v for f in FINETUNERS for v in (f"ft-{f}", f"ed-e+ft-{f}")]


def base_config(**sections) -> dict:
    """A config with one model, the editor `e`, two finetuners (lora saves every 2 of 10 steps)."""
    config = {
        "models": {"m": {"kind": "toy"}},
        "promptsets": {"p": {"source": "toy", "set": "professions"}},
        "editors": {"e": {"method": "uce_erase", "edit_concepts": ["naked"]}},
        "datasets": {"d": {"source": "toy", "set": "style"}},
        "finetuners": {"full": {"method": "full", "dataset": "d", "steps": 10, "save_every": 5},
                       "lora": {"method": "lora", "dataset": "d", "steps": 10, "save_every": 2}},
        "scorers": {"oracle": {"kind": "oracle"}},
        "evaluations": [{"model": "m", "promptset": "p", "scorers": ["oracle"]}],
    }
    config.update(sections)
    return config


def write_samples(root, variants=VARIANTS, prompts=("a-0", "b-0", "c-0"), seeds=(0, 1)) -> None:
    """A PNG per (variant, prompt, seed) whose colour encodes the variant, and each index.csv."""
    for v, variant in enumerate(variants):
        folder = root / f"results/samples/m/{variant}/p"
        folder.mkdir(parents=True)
        rows = []
        for prompt in prompts:
            for seed in seeds:
                file = f"{prompt}_{seed:03d}.png"
                Image.fromarray(np.full((8, 8, 3), 30 * v, np.uint8)).save(folder / file)
                rows.append(dict(prompt_id=prompt, prompt=f"a {prompt}", image=seed, seed=seed, file=file))
        pd.DataFrame(rows).to_csv(folder / "index.csv", index=False)
    write_edit_record(root, "m", "e")


def test_grid_has_four_columns_of_the_same_prompt_and_seed(tmp_path):
    write_samples(tmp_path)
    entry = {"kind": "grid", "model": "m", "editor": "e", "finetuners": list(FINETUNERS), "promptset": "p", "count": 2}
    spec = resolve(entry, base_config())
    # the samples, and the edit's record (a missed target would mark the figure)
    assert input_paths(spec) == [f"results/samples/m/{v}/p/index.csv" for v in VARIANTS] + [RECORD]
    fig, cells = build_figure(spec, root=tmp_path)
    axes = np.array(fig.axes).reshape(-1, 4)
    assert axes.shape == (len(FINETUNERS) * 2, 4)  # one row per (fine-tuner, image), four variants
    assert [ax.get_title() for ax in axes[0]] == ["M", "M_ed", "M_ft", "M_ed_ft"]
    # every row shows one (prompt, seed) across its four variants; default picks: first and last prompt
    for (finetuner, prompt, seed), row in cells.groupby(["finetuner", "prompt_id", "seed"]):
        assert row["variant"].tolist() == ["base", "ed-e", f"ft-{finetuner}", f"ed-e+ft-{finetuner}"]
    assert sorted(set(zip(cells["prompt_id"], cells["seed"]))) == [("a-0", 0), ("c-0", 0)]
    # the drawn image is the variant's own file (its colour encodes the variant)
    shown = axes[1][3].images[0].get_array()
    assert int(np.asarray(shown)[0, 0, 0]) == 30 * VARIANTS.index("ed-e+ft-full")

    out = {ext: tmp_path / f"results/figures/g.{ext}" for ext in ("png", "pdf", "csv")}
    write_figure(fig, cells, out["png"], out["pdf"], out["csv"], dpi=40)
    assert Image.open(out["png"]).size[0] > 0
    assert out["pdf"].read_bytes().startswith(b"%PDF")
    assert len(pd.read_csv(out["csv"])) == len(FINETUNERS) * 2 * 4


def test_grid_given_images_and_a_missing_one_is_named(tmp_path):
    write_samples(tmp_path)
    entry = {"kind": "grid", "model": "m", "editor": "e", "finetuners": ["lora"], "promptset": "p",
             "images": [{"prompt_id": "b-0", "seed": 1}]}
    _, cells = build_figure(resolve(entry, base_config()), root=tmp_path)
    assert set(zip(cells["prompt_id"], cells["seed"])) == {("b-0", 1)}
    # a variant sampled with other seeds cannot be paired: the error names its index
    index = tmp_path / "results/samples/m/ft-lora/p/index.csv"
    pd.read_csv(index).query("seed == 0").to_csv(index, index=False)
    with pytest.raises(FigureInputError, match=r"ft-lora/p/index.csv.*b-0.*seed 1"):
        build_figure(resolve(entry, base_config()), root=tmp_path)


def gender_scores(share_women: dict, seeds=8) -> pd.DataFrame:
    """Two professions x 2 prompts x seeds; a share of each profession's images are women."""
    rows = []
    for group, share in share_women.items():
        n = 2 * seeds
        women = set(range(round(share * n)))
        for k in range(n):
            rows.append(dict(prompt_id=f"{group}-{k // seeds}", seed=k % seeds, file=f"{group}{k}.png", group=group,
                             gender="woman" if k in women else "man", scorer="oracle"))
    return pd.DataFrame(rows)


def test_bars_draw_a_tables_four_variants_with_its_ci_whiskers(tmp_path):
    config = base_config(tables={"t1": {"kind": "debias", "model": "m", "editor": "e", "finetuners": list(FINETUNERS),
                                        "promptset": "p", "scorer": "oracle", "bootstrap_resamples": 200,
                                        "names": {"full": "Full Size"}}})
    table_spec = resolve_table(config["tables"]["t1"], config)
    shares = {"base": 0.1, "ed-e": 0.5, "ft-full": 0.2, "ed-e+ft-full": 0.3, "ft-lora": 0.1, "ed-e+ft-lora": 0.45}
    frames = {ScoreKey("m", v, "p", "oracle"): gender_scores({"ceo": s, "nurse": 1 - s}) for v, s in shares.items()}
    table = build_table(table_spec, frames)
    paths = [tmp_path / f"results/tables/t1.{ext}" for ext in ("csv", "md", "tex")]
    write_table(table, table_spec, *paths, name="t1")

    spec = resolve({"kind": "bars", "table": "t1"}, config)
    assert input_paths(spec) == ["results/tables/t1.csv"] and spec["table_kind"] == "debias"
    fig, data = build_figure(spec, root=tmp_path)
    panels = ["ceo", "nurse", "Avg."]  # the std. row is not drawn
    assert list(pd.unique(data["panel"])) == panels
    assert len(data) == len(panels) * len(FINETUNERS) * 4
    drawn = [ax for ax in fig.axes if ax.get_visible()]
    assert len(drawn) == len(panels)
    assert sum(len(c.patches) for c in drawn[0].containers if hasattr(c, "patches")) == len(FINETUNERS) * 4
    # the bars are the table's numbers and the whiskers its CI bounds
    cell = data[(data["panel"] == "Avg.") & (data["finetuner"] == "Full Size") & (data["role"] == "M_ed_ft")].iloc[0]
    assert cell["value"] == pytest.approx(table.loc["Avg.", ("Full Size", "M_ed_ft")])
    assert cell["lo"] == pytest.approx(table.loc["Avg.", ("Full Size", "M_ed_ft lo")])
    assert cell["lo"] <= cell["value"] <= cell["hi"]

    only = resolve({"kind": "bars", "table": "t1", "rows": ["Avg."]}, config)
    assert set(build_figure(only, root=tmp_path)[1]["panel"]) == {"Avg."}
    with pytest.raises(FigureInputError, match="no row 'CEO'"):
        build_figure(resolve({"kind": "bars", "table": "t1", "rows": ["CEO"]}, config), root=tmp_path)


def test_persistence_curve_has_one_point_per_checkpoint_and_the_direct_values(tmp_path):
    config = base_config()
    entry = {"kind": "persistence", "model": "m", "editor": "e", "finetuners": list(FINETUNERS), "promptset": "p",
             "scorer": "oracle", "metric": "delta", "bootstrap_resamples": 200}
    spec = resolve(entry, config)
    assert spec["steps"] == {"full": [5, 10], "lora": [2, 4, 6, 8, 10]}
    shares = {"base": 0.0, "ed-e": 0.5, "ed-e+ft-full@5": 0.375, "ed-e+ft-full": 0.25}
    shares.update({f"ed-e+ft-lora@{s}": 0.5 - 0.0625 * s / 2 for s in (2, 4, 6, 8)} | {"ed-e+ft-lora": 0.1875})
    assert input_paths(spec) == [ScoreKey("m", v, "p", "oracle").path for v in shares] + [RECORD]
    write_edit_record(tmp_path, "m", "e")
    for variant, share in shares.items():
        path = tmp_path / ScoreKey("m", variant, "p", "oracle").path
        path.parent.mkdir(parents=True)
        gender_scores({"ceo": share, "nurse": share}).to_csv(path, index=False)

    fig, data = build_figure(spec, root=tmp_path)
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert len(lines["lora"].get_xdata()) == 6 and len(lines["full"].get_xdata()) == 3  # M_ed + checkpoints + final
    assert list(lines["lora"].get_xdata()) == [0, 2, 4, 6, 8, 10]
    lora = data[data["finetuner"] == "lora"]
    assert lora["variant"].tolist() == ["ed-e"] + [f"ed-e+ft-lora@{s}" for s in (2, 4, 6, 8)] + ["ed-e+ft-lora"]
    expected = [gender_delta(female_share(gender_scores({"x": shares[v]})["gender"])) for v in lora["variant"]]
    assert lora["value"].to_numpy() == pytest.approx(expected)
    assert (lora["lo"] <= lora["value"] + 1e-12).all() and (lora["value"] <= lora["hi"] + 1e-12).all()
    # the M_ed level (dotted) and the base level (dashed) are marked
    assert lines["M_ed (before fine-tuning)"].get_ydata()[0] == pytest.approx(0.0)
    assert lines["M (unedited)"].get_ydata()[0] == pytest.approx(1.0)


@pytest.mark.parametrize("figure, message", [
    ({"kind": "bars", "table": "nope"}, "figures.f.table: unknown table 'nope'"),
    ({"kind": "persistence", "model": "m", "editor": "e", "finetuners": ["lora", "x"], "promptset": "p",
      "scorer": "oracle", "metric": "delta"}, r"figures.f.finetuners\[1\]: unknown finetuner 'x'"),
    ({"kind": "grid", "model": "m", "editor": "zz", "finetuners": ["lora"], "promptset": "p"},
     "figures.f.editor: unknown editor 'zz'"),
    ({"kind": "grid", "model": "m", "editor": "e", "finetuners": ["lora"], "promptset": "p", "count": 0},
     "figures.f.count"),
])
def test_figure_config_errors_name_the_key(figure, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(base_config(figures={"f": figure}), SCHEMA)


def test_a_persistence_finetuner_without_checkpoints_is_an_error():
    config = base_config()
    config["finetuners"]["full"].pop("save_every")
    config["figures"] = {"f": {"kind": "persistence", "model": "m", "editor": "e", "finetuners": ["full"],
                               "promptset": "p", "scorer": "oracle", "metric": "safe"}}
    entry = config["figures"]["f"]
    assert FIGURES.get("persistence").problems("f", entry, config) == [
        "figures.f.finetuners[0]: finetuner 'full' has no step for a checkpoint (`every` or its `save_every`), so "
        "its curve has only its start and end; set figures.f.every or finetuners.full.save_every"]
    assert FIGURES.names() == ["grid", "bars", "persistence", "league"]
