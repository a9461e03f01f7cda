from pathlib import Path

from editrobust.finetune import run_finetune
from editrobust.runtime import param_json, setup_job
from editrobust.devices import pick_device

setup_job(snakemake)
out_dir = Path(snakemake.output.final).parent  # results/models/<model>/<variant>
run_finetune(
    parent_dir=Path(snakemake.input.parent).parent,
    finetuner=snakemake.params.name,
    entry=param_json(snakemake, "finetuner"),
    dataset=param_json(snakemake, "dataset"),
    cache_path=snakemake.input.cache,
    out_dir=out_dir,
    # outside the outputs, so a killed job's state survives Snakemake's cleanup and is resumed
    state_dir=out_dir.parents[2] / "train_state" / out_dir.parent.name / out_dir.name,
    device=str(pick_device(snakemake.params.device)),
)
