# Report: figures (results/figures/<name>.png, .pdf and .csv of the numbers drawn), the `report`
# target that `snakemake report --report report.html` gathers, and the human annotation kits.
# Figures read samples, score files and tables only: a new figure never regenerates an image.
import glob

from editrobust.report import input_paths as figure_input_paths
from editrobust.report import resolve as resolve_figure
from editrobust.report.spec import kit_index_paths, kit_labels_paths


def figure_spec(name):
    """The figure's config slice (editrobust.report.spec.resolve): its entry with defaults, the
    checkpoint steps of its fine-tuners, the kind of the table it draws."""
    figures = config.get("figures") or {}
    if name not in figures:
        raise WorkflowError(f"no figure {name!r} in the config's figures (defined: {', '.join(figures) or 'none'})")
    return resolve_figure(figures[name], config)


def figure_targets():
    return [f"results/figures/{name}.{ext}" for name in (config.get("figures") or {}) for ext in ("png", "pdf")]


FIGURE_CATEGORIES = {"grid": "Sample grids", "bars": "Figures", "persistence": "Persistence"}


localrules:
    make_figure,
    figures,
    report,
    annotation_kits,


rule make_figure:
    input:
        lambda wildcards: figure_input_paths(figure_spec(wildcards.figure)),
    output:
        png=report(
            "results/figures/{figure}.png",
            caption="../report/figure.rst",
            category=lambda wildcards: FIGURE_CATEGORIES[config["figures"][wildcards.figure]["kind"]],
            labels=lambda wildcards: {"figure": wildcards.figure, "kind": config["figures"][wildcards.figure]["kind"]},
        ),
        pdf="results/figures/{figure}.pdf",
        csv="results/figures/{figure}.csv",
    params:
        figure=lambda wildcards: canonical(figure_spec(wildcards.figure)),
    wildcard_constraints:
        figure=NAME,
    log:
        "logs/make_figure/{figure}.log",
    script:
        "../scripts/make_figure.py"


rule figures:
    input:
        figure_targets(),


rule report:
    """Everything the Snakemake report shows: every table and figure of the config.
    Build with `snakemake report`, then `snakemake report --report report.html` (or .zip)."""
    input:
        table_targets(),
        figure_targets(),


# --- human annotation kits (editrobust.report.annotation) ---
KIT_OUTPUT_ONLY = ("returned", "scorer")  # where labels come back: changing it must not re-blind the kit


def kit_spec(name):
    entry = dict(config["annotation_kits"][name])
    entry.setdefault("seed", 0)
    entry.setdefault("scorer", "human")
    entry.setdefault("returned", f"annotations/{name}")
    return entry


def kit_labels(name):
    """{variant: labels file} of the kit's human scorer (its `labels` template filled in)."""
    spec = kit_spec(name)
    return kit_labels_paths(spec, config["scorers"][spec["scorer"]]["labels"])


def returned_annotations(name):
    """Every annotator's CSV in the kit's `returned` folder: dropping one in re-runs the ingest."""
    return sorted(glob.glob(os.path.join(kit_spec(name)["returned"], "*.csv")))


rule export_annotation_kit:
    input:
        lambda wildcards: kit_index_paths(kit_spec(wildcards.kit)),
    output:
        kit=directory("results/annotation/{kit}/kit"),
        key="results/annotation/{kit}/key.csv",
    params:
        kit=lambda wildcards: canonical({k: v for k, v in kit_spec(wildcards.kit).items() if k not in KIT_OUTPUT_ONLY}),
    wildcard_constraints:
        kit=NAME,
    log:
        "logs/export_annotation_kit/{kit}.log",
    script:
        "../scripts/export_annotation_kit.py"


rule annotation_kits:
    input:
        [f"results/annotation/{name}/key.csv" for name in config.get("annotation_kits") or {}],


# One ingest rule per kit: its outputs are the human scorer's labels files of the kit's variants
# (paths from the scorer's `labels` template), which Snakemake outputs cannot compute from wildcards.
for _kit in config.get("annotation_kits") or {}:

    rule:
        name:
            f"ingest_annotations_{_kit}"
        input:
            key=f"results/annotation/{_kit}/key.csv",
            annotations=lambda wildcards, kit=_kit: returned_annotations(kit),
        output:
            *kit_labels(_kit).values(),
            agreement=report(
                f"results/annotation/{_kit}/agreement.csv",
                caption="../report/agreement.rst",
                category="Annotation",
            ),
        params:
            kit=_kit,
            labels=canonical(kit_labels(_kit)),
        log:
            f"logs/ingest_annotations/{_kit}.log",
        localrule: True
        script:
            "../scripts/ingest_annotations.py"
