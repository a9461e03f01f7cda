# Report: figures (results/figures/<name>.png, .pdf and .csv of the numbers drawn), the `report`
# target that `snakemake report --report report.html` gathers, and the human annotation kits.
# Figures read samples, score files and tables only: a new figure never regenerates an image.


localrules:
    make_figure,
    figures,
    report,
    annotation_kits,


rule make_figure:
    input:
        R.figure_inputs,
    output:
        png=report(
            paths.fill(paths.FIGURE, ext="png"),
            caption="../report/figure.rst",
            category=R.figure_category,
            labels=R.figure_labels,
        ),
        pdf=paths.fill(paths.FIGURE, ext="pdf"),
        csv=paths.fill(paths.FIGURE, ext="csv"),
    params:
        figure=R.figure_slice,
    wildcard_constraints:
        figure=variant_names.NAME,
    log:
        "logs/make_figure/{figure}.log",
    benchmark:
        "benchmarks/rules/make_figure/{figure}.tsv",
    conda:
        ENV
    script:
        "../scripts/make_figure.py"


rule figures:
    input:
        R.figure_targets(),


rule report:
    """Everything the Snakemake report shows: every table and figure of the config.
    Build with `snakemake report`, then `snakemake report --report report.html` (or .zip)."""
    input:
        R.table_targets(),
        R.figure_targets(),


# --- human annotation kits (editrobust.report.annotation) ---
rule export_annotation_kit:
    input:
        R.kit_inputs,
    output:
        kit=directory(paths.KIT_DIR),
        key=paths.KIT_KEY,
    params:
        kit=R.kit_slice,
    wildcard_constraints:
        kit=variant_names.NAME,
    log:
        "logs/export_annotation_kit/{kit}.log",
    benchmark:
        "benchmarks/rules/export_annotation_kit/{kit}.tsv",
    conda:
        ENV
    script:
        "../scripts/export_annotation_kit.py"


rule annotation_kits:
    input:
        R.kit_targets(),


# One ingest rule per kit: its outputs are the human scorer's labels files of the kit's variants
# (paths from the scorer's `labels` template), which Snakemake outputs cannot compute from wildcards.
for _kit in config.get("annotation_kits") or {}:

    rule:
        name:
            f"ingest_annotations_{_kit}"
        input:
            key=paths.fill(paths.KIT_KEY, kit=_kit),
            annotations=lambda wildcards, kit=_kit: R.returned_annotations(kit),
        output:
            *R.kit_labels(_kit).values(),
            agreement=report(
                paths.fill(paths.KIT_AGREEMENT, kit=_kit),
                caption="../report/agreement.rst",
                category="Annotation",
            ),
        params:
            kit=_kit,
            labels=canonical(R.kit_labels(_kit)),
        log:
            f"logs/ingest_annotations/{_kit}.log",
        localrule: True
        conda:
            ENV
        script:
            "../scripts/ingest_annotations.py"
