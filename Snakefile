# editrobust: does a text-to-image model edit survive later fine-tuning?
# Entry point: validates the config, then includes one rule file per stage.
# Run as:  snakemake TARGET --cores 2        (profiles/default sets the gpu=1 limit)
import os

from snakemake.utils import min_version

# OpenMP threads that spin while waiting collapse when two torch jobs share a small machine (a
# toy UNet step went from 0.5 s to 2.6 s on 2 cores); passive waiting keeps them fair. Jobs
# inherit this environment; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# envs/editrobust.yaml installs this project from here (pip expands ${EDITROBUST_ROOT} in its
# requirements), so `--sdm conda` environments run the same code as the workflow.
os.environ.update(EDITROBUST_ROOT=workflow.basedir)

min_version("9.0")


# The embedded default (the toy world). A `--configfile` on the command line replaces it
# rather than being merged into it, so a config describes a whole study.
if not workflow.overwrite_configfiles:
    workflow.configfile("config/config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/downloads.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/edit.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/promptsets.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/preflight.smk"


localrules:
    all,
    build_promptset,
    summarize_scores,


rule all:
    input:
        R.all_targets(),
