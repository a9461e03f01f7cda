from pathlib import Path

from editrobust import paths
from editrobust.devices import pick_device
from editrobust.finetune import finetune_model
from editrobust.runtime import param_json, setup_job

setup_job(snakemake)
out_dir = Path(snakemake.output.final).parent  # results/models/<model>/<variant>
finetune_model(
    parent_dir=Path(snakemake.input.parent).parent,
    finetuner=snakemake.params.name,
    entry=param_json(snakemake, "finetuner"),
    dataset=param_json(snakemake, "dataset"),
    cache_path=snakemake.input.cache,
    out_dir=out_dir,
    state_dir=paths.train_state_dir(out_dir),
    device=str(pick_device(snakemake.params.device)),
)
