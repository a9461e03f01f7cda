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
