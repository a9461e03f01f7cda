from pathlib import Path

from editrobust import paths
from editrobust.finetune import finetune_model
from editrobust.runtime import job_device, param_json, setup_job
from editrobust.workflow import declared_checkpoints

setup_job(snakemake)
out_dir = Path(snakemake.output.final).parent  # results/models/<model>/<variant>
finetune_model(
    parent_dir=Path(snakemake.input.chain[-1]).parent,  # the parent's chain, base first
    finetuner=snakemake.params.name,
    entry=param_json(snakemake, "finetuner"),
    dataset=param_json(snakemake, "dataset"),
    cache_path=snakemake.input.cache,
    out_dir=out_dir,
    state_dir=paths.train_state_dir(out_dir),
    device=job_device(snakemake),
    checkpoints=declared_checkpoints(snakemake.output, snakemake.output.final),  # the @<step> outputs
)
