# Tables: pure functions of score files (src/editrobust/tables/), so a new table or statistic
# never regenerates an image. `snakemake tables` builds every table of the config.


localrules:
    make_table,
    tables,


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
