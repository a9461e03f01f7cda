"""Each job's wall time and peak memory from Snakemake's `benchmark:` files, as one table.

    .venv/bin/python benchmarks/rule_benchmarks.py                       # this directory's run
    .venv/bin/python benchmarks/rule_benchmarks.py --workdir runs/x      # a run made with --directory runs/x
    .venv/bin/python benchmarks/rule_benchmarks.py --markdown --by-rule  # one row per rule, to paste

Every rule writes `benchmarks/rules/<rule>/<wildcards>.tsv` (Snakemake's `s`, `max_rss` in MB,
...; the last line is the job's last run). The table lists each job's seconds and peak RSS,
then the totals: the sum of the seconds (the run's wall time when jobs ran one at a time) and the
largest peak RSS. `--by-rule`: per rule, the job count, total and largest seconds, largest RSS.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def read_rule_benchmarks(workdir: Path) -> list[dict]:
    """One row per job: {rule, job (its wildcards' file name), seconds, max_rss_mb} of the last run
    of each `benchmarks/rules/<rule>/<...>.tsv` under `workdir` (rows without numbers are skipped)."""
    rows = []
    root = Path(workdir) / "benchmarks" / "rules"
    for tsv in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = [line for line in tsv.read_text().splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        header, last = lines[0].split("\t"), lines[-1].split("\t")
        if "s" not in header or "max_rss" not in header:
            continue
        value = dict(zip(header, last))
        try:
            seconds, rss = float(value["s"]), float(value["max_rss"])
        except ValueError:  # "NA": the job ended before the first measurement
            continue
        rel = tsv.relative_to(root).with_suffix("")
        rows.append(dict(rule=rel.parts[0], job="/".join(rel.parts[1:]), seconds=seconds, max_rss_mb=rss))
    return rows


def by_rule(rows: list[dict]) -> list[dict]:
    out: dict[str, dict] = {}
    for r in rows:
        agg = out.setdefault(r["rule"], dict(rule=r["rule"], jobs=0, seconds=0.0, max_seconds=0.0, max_rss_mb=0.0))
        agg["jobs"] += 1
        agg["seconds"] += r["seconds"]
        agg["max_seconds"] = max(agg["max_seconds"], r["seconds"])
        agg["max_rss_mb"] = max(agg["max_rss_mb"], r["max_rss_mb"])
    return sorted(out.values(), key=lambda a: -a["seconds"])


def render(rows: list[dict], columns: list[tuple[str, str, str]], markdown: bool) -> str:
    """columns: (key, title, format)."""
    cells = [[format(r[k], f) if f else str(r[k]) for k, _, f in columns] for r in rows]
    titles = [t for _, t, _ in columns]
    if markdown:
        lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(t), *(len(c[i]) for c in cells)) if cells else len(t) for i, t in enumerate(titles)]
    fmt = lambda c: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths)))  # noqa: E731
    return "\n".join([fmt(titles)] + [fmt(c) for c in cells])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("."), help="the run's working directory (default: .)")
    ap.add_argument("--by-rule", action="store_true", help="one row per rule")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = ap.parse_args(argv)
    rows = read_rule_benchmarks(args.workdir)
    if not rows:
        raise SystemExit(f"no benchmark files under {args.workdir / 'benchmarks' / 'rules'}")
    if args.by_rule:
        print(render(by_rule(rows), [("rule", "rule", ""), ("jobs", "jobs", "d"), ("seconds", "total s", ".1f"),
                                     ("max_seconds", "largest s", ".1f"), ("max_rss_mb", "peak RSS MB", ".0f")],
                     args.markdown))
    else:
        rows = sorted(rows, key=lambda r: (r["rule"], r["job"]))
        print(render(rows, [("rule", "rule", ""), ("job", "job", ""), ("seconds", "s", ".1f"),
                            ("max_rss_mb", "peak RSS MB", ".0f")], args.markdown))
    total, peak = sum(r["seconds"] for r in rows), max(rows, key=lambda r: r["max_rss_mb"])
    print(f"\n{len(rows)} jobs, {total:.0f} s in all ({total / 60:.1f} min one at a time); largest peak RSS "
          f"{peak['max_rss_mb']:.0f} MB ({peak['rule']} {peak['job']})")


if __name__ == "__main__":
    main()
