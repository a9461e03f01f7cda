from editrobust.io import write_csv
from editrobust.runtime import param_json, setup_job
from editrobust.scoring import score_images

log = setup_job(snakemake)
# Named inputs besides the index (the shared CLIP embeddings, a human labels CSV) go to the scorer.
extra = {name: path for name, path in snakemake.input.items() if name != "index"}
scores = score_images(snakemake.input.index, param_json(snakemake, "scorer"), extra)
log.info("%d images scored by %s", len(scores), snakemake.wildcards.scorer)
write_csv(snakemake.output[0], scores)
