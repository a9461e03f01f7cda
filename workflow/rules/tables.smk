# Tables: pure functions of score files (src/editrobust/tables/), so a new table or statistic
# never regenerates an image. `snakemake tables` builds every table of the config.
from editrobust.tables import input_paths as table_input_paths
from editrobust.tables import resolve as resolve_table


def table_spec(name):
    """The table's config slice: its entry with defaults filled, plus the little it reads from
    other sections (the RoAD type of each ReFACT editor); see editrobust.tables.spec.resolve."""
    tables = config.get("tables") or {}
    if name not in tables:
        raise WorkflowError(f"no table {name!r} in the config's tables (defined: {', '.join(tables) or 'none'})")
    return resolve_table(tables[name], config)


def table_inputs(wildcards):
    """Exactly the score (or quality) files this table reads."""
    return table_input_paths(table_spec(wildcards.table))


def table_slice(wildcards):
    return canonical(table_spec(wildcards.table))


def table_targets():
    return [f"results/tables/{name}.{ext}" for name in (config.get("tables") or {}) for ext in ("csv", "md", "tex")]


localrules:
    make_table,
    tables,


rule make_table:
    input:
        table_inputs,
    output:
        csv=report("results/tables/{table}.csv", caption="../report/table.rst", category="Tables"),
        md="results/tables/{table}.md",
        tex="results/tables/{table}.tex",
    params:
        table=table_slice,
    wildcard_constraints:
        table=NAME,
    log:
        "logs/make_table/{table}.log",
    script:
        "../scripts/make_table.py"


rule tables:
    input:
        table_targets(),
