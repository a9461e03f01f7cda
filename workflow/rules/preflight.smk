# Pre-flight: `snakemake preflight [--configfile F]` checks, before a long grid, that everything the
# config asks for can run here: inputs present offline, room on the disk, GPU memory
# (src/editrobust/preflight.py). It builds nothing and exits non-zero if a check fails; its table
# is printed and kept in logs/preflight.log.


localrules:
    preflight,


rule preflight:
    params:
        configfile=" ".join(map(str, workflow.overwrite_configfiles or [])),
    log:
        "logs/preflight.log",
    conda:
        ENV
    script:
        "../scripts/preflight.py"


# The cost estimate: `snakemake cost [--configfile F]` prints, before a grid runs, its GPU-hours per
# rule class (extrapolated from FLOP counts, or scaled from a GPU measurement) and the disk each output
# kind takes (src/editrobust/cost.py); kept in logs/cost.log. It builds nothing.
localrules:
    cost,


rule cost:
    log:
        "logs/cost.log",
    conda:
        ENV
    script:
        "../scripts/cost.py"
