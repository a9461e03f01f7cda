# editrobust: does a text-to-image model edit survive later fine-tuning?
# Entry point: validates the config, then includes one rule file per stage.
# Run as:  snakemake TARGET --cores 2        (profiles/default sets the gpu=1 limit)
from snakemake.utils import min_version

min_version("9.0")


# The embedded default (the toy world). A `--configfile` on the command line replaces it
# rather than being merged into it, so a config describes a whole study.
if not workflow.overwrite_configfiles:
    workflow.configfile("config/config.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/promptsets.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/score.smk"


localrules:
    all,
    build_promptset,
    summarize_scores,


rule all:
    input:
        all_targets(),
