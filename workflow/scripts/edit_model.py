from pathlib import Path

from editrobust.editing import resolve_road_row, run_edit
from editrobust.runtime import param_json, setup_job
from editrobust.devices import pick_device

setup_job(snakemake)
entry = param_json(snakemake, "editor")
run_edit(
    Path(snakemake.input.base).parent,
    snakemake.wildcards.editor,
    entry,
    Path(snakemake.output[0]).parent,
    sampling=param_json(snakemake, "sampling"),
    road_row=resolve_road_row(entry["road"]) if "road" in entry else None,
    stats=snakemake.input.get("stats"),
    device=str(pick_device(snakemake.params.device)),
    clip_model=param_json(snakemake, "clip_model") if snakemake.params.clip_model else None,
)
