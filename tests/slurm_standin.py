"""Stand-in SLURM commands for tests: `sbatch`, `srun`, `sacct`, `squeue`, `sinfo`, `scontrol`,
`sacctmgr` and `sshare`, as small Python scripts written into a `bin/` folder to put first on PATH.

They answer as SLURM does, just enough for snakemake-executor-plugin-slurm to submit jobs and see
them finish:
- `sbatch` logs its argv (one JSON list per line in `<state>/sbatch.jsonl`), refuses options a real
  sbatch does not know, runs the `--wrap` command at once (as the job would run: in `-D`, output to
  `--output`, with SLURM_JOB_ID and, for `--gpus=N`, SLURM_GPUS), records COMPLETED or FAILED and
  prints the job id (`--parsable`).
- `srun` (what the plugin's job step calls) logs its argv to `<state>/srun.jsonl` and runs the
  command after its options.
- `sacct` / `squeue` print `<id>|<state>` for every job; `sacct -nu` and `sacctmgr` know one account;
  `sinfo -o %P` lists partitions with a default; `scontrol show config` gives MinJobAge.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ACCOUNT = "study_account"
DEFAULT_PARTITION = "gpu"

# sbatch options the plugin may emit (long form with `=`, or flag + value): anything else is refused
# the way sbatch refuses an unknown option.
SBATCH_PREAMBLE = r'''
import fcntl, json, os, re, subprocess, sys
from pathlib import Path

STATE = Path(os.environ["FAKE_SLURM_STATE"])
WITH_VALUE = {"--job-name", "--output", "--comment", "-A", "--account", "-p", "--partition", "-t", "--time",
              "--mem", "--mem-per-cpu", "-C", "--constraint", "-D", "--chdir", "--clusters"}
WITH_EQUALS = {"--export", "--ntasks", "--ntasks-per-gpu", "--cpus-per-task", "--cpus-per-gpu", "--gpus", "--gres",
               "--qos", "--nodes", "--wrap", "--exclude", "--reservation", "--ntasks-per-node"}
FLAGS = {"--parsable", "--requeue", "--no-requeue"}
'''

SBATCH = SBATCH_PREAMBLE + r'''
argv = sys.argv[1:]
with open(STATE / "sbatch.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\n")
opts, i = {}, 0
while i < len(argv):
    a = argv[i]
    name = a.split("=", 1)[0]
    if a in FLAGS:
        opts[a] = True
    elif "=" in a and name in WITH_EQUALS | WITH_VALUE:
        opts[name] = a.split("=", 1)[1]
    elif a in WITH_VALUE and i + 1 < len(argv):
        opts[a] = argv[i + 1]
        i += 1
    else:
        sys.exit(f"sbatch: unrecognized option '{a}'")
    i += 1
if "--wrap" not in opts:
    sys.exit("sbatch: error: a --wrap command is expected by this stand-in")
with open(STATE / "next_id", "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    job_id = int(f.read() or 1000) + 1
    f.seek(0); f.truncate(); f.write(str(job_id))
env = dict(os.environ, SLURM_JOB_ID=str(job_id), SLURM_JOBID=str(job_id))
if "--gpus" in opts:
    env["SLURM_GPUS"] = opts["--gpus"]
out = Path(opts.get("--output", f"slurm-{job_id}.out").replace("%j", str(job_id)))
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "w") as log:
    rc = subprocess.run(opts["--wrap"], shell=True, cwd=opts.get("-D"), env=env, stdout=log,
                        stderr=subprocess.STDOUT).returncode
with open(STATE / "jobs", "a") as f:
    f.write(f"{job_id}|{'COMPLETED' if rc == 0 else 'FAILED'}\n")
print(job_id)
'''

SRUN = r'''
import json, os, subprocess, sys
from pathlib import Path

argv = sys.argv[1:]
with open(Path(os.environ["FAKE_SLURM_STATE"]) / "srun.jsonl", "a") as f:
    f.write(json.dumps(argv) + "\n")
i = 0
while i < len(argv) and argv[i].startswith("-"):
    i += 1
sys.exit(subprocess.run(argv[i:]).returncode)
'''

JOB_STATES = r'''
import os, sys
from pathlib import Path

jobs = Path(os.environ["FAKE_SLURM_STATE"]) / "jobs"
if "-nu" in sys.argv:  # the plugin guessing an account from recent jobs
    print("{account}")
elif "-j" in sys.argv:  # details of one job (node list, failure reason)
    print("node001")
else:
    print(jobs.read_text() if jobs.exists() else "", end="")
'''

COMMANDS = {
    "sbatch": SBATCH,
    "srun": SRUN,
    "sacct": JOB_STATES.replace("{account}", ACCOUNT),
    "squeue": JOB_STATES.replace("{account}", ACCOUNT),
    "sinfo": f'print("PARTITION\\n{DEFAULT_PARTITION}*\\ncpu")\n',
    "scontrol": 'print("MinJobAge               = 300 sec\\nMaxArraySize            = 1001")\n',
    "sacctmgr": f'print("{ACCOUNT}")\n',
    "sshare": f'print("{ACCOUNT}")\n',
}


def install(bin_dir: Path, python: str = sys.executable) -> Path:
    """Write the stand-ins into `bin_dir` (executable, run by `python`); returns `bin_dir`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in COMMANDS.items():
        path = bin_dir / name
        path.write_text(f"#!{python}\n{body}")
        path.chmod(0o755)
    return bin_dir


def read_calls(state_dir: Path, command: str) -> list[list[str]]:
    """The argv of every call of `command` ('sbatch' or 'srun'), in order."""
    path = Path(state_dir) / f"{command}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
