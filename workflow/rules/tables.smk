# Tables: pure functions of score files (src/editrobust/tables/), so a new table or statistic
# never regenerates an image. `snakemake tables` builds every table of the config.


localrules:
    make_table,
    tables,
    robustness,


rule make_table:
    input:
        R.table_inputs,
    output:
        csv=report(paths.fill(paths.TABLE, ext="csv"), caption="../report/table.rst", category="Tables"),
        md=paths.fill(paths.TABLE, ext="md"),
        tex=paths.fill(paths.TABLE, ext="tex"),
    params:
        table=R.table_slice,
    wildcard_constraints:
        table=variant_names.NAME,
    log:
        "logs/make_table/{table}.log",
    benchmark:
        "benchmarks/rules/make_table/{table}.tsv",
    conda:
        ENV
    script:
        "../scripts/make_table.py"


rule tables:
    input:
        R.table_targets(),


# Seed planning: per cell of a table, the images per prompt (or prompts) needed for a CI
# half-width and for detecting a change (editrobust.tables.power; config key `power`).
# `snakemake power` builds it for every table whose kind supports it.


localrules:
    table_power,
    power,


rule table_power:
    input:
        R.table_inputs,
    output:
        csv=paths.fill(paths.POWER_TABLE, ext="csv"),
        md=paths.fill(paths.POWER_TABLE, ext="md"),
    params:
        table=R.table_slice,
        power=R.power_slice,
    wildcard_constraints:
        table=variant_names.NAME,
    log:
        "logs/table_power/{table}.log",
    benchmark:
        "benchmarks/rules/table_power/{table}.tsv",
    conda:
        ENV
    script:
        "../scripts/table_power.py"


rule power:
    input:
        R.power_targets(),


rule robustness:
    """The robustness league tables (kind `robustness`) and their figures: not part of `tables`,
    since their remedies are dozens of extra edits, fine-tunes and image sets."""
    input:
        R.own_targets("robustness"),
