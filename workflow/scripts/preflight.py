from editrobust.preflight import preflight, render
from editrobust.runtime import setup_job

log = setup_job(snakemake)
checks = preflight(snakemake.config, configfile=snakemake.params.configfile or None)
table = render(checks)
print(table, flush=True)
log.info("\n%s", table)
if any(c.failed for c in checks):
    raise SystemExit(f"pre-flight: {sum(c.failed for c in checks)} check(s) would fail (table above, and in {snakemake.log[0]})")
