from editrobust.io import write_csv
from editrobust.promptsets import build_promptset
from editrobust.runtime import param_json, setup_job

log = setup_job(snakemake)
df = build_promptset(param_json(snakemake, "promptset"))
log.info("%d prompts", len(df))
write_csv(snakemake.output[0], df)
