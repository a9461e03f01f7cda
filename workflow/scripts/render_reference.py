from editrobust.runtime import param_json, setup_job
from editrobust.scoring.quality import DEFAULT_REFERENCE_SEED, render_toy_reference

log = setup_job(snakemake)
reference = param_json(snakemake, "reference")
if reference["source"] != "toy":
    raise ValueError(f"quality set {snakemake.wildcards.quality_set}: only `source: toy` references are rendered; "
                     f"a `dir` reference is read from its path")
render_toy_reference(snakemake.output[0], n=int(reference.get("n", 1000)), seed=int(reference.get("seed", DEFAULT_REFERENCE_SEED)))
log.info("rendered %s toy reference images", reference.get("n", 1000))
