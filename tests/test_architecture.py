"""The shape of the code: no import cycle, a lint-clean workflow, environment files that install
the project, rule files that are wiring only, and documents that stand on their own."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"


def module_name(path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """{module: the editrobust modules it imports}, function-level imports included. Importing
    a.b.c also imports the packages a and a.b (except the importer's own ancestors)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    candidate = ".".join(parts[:i])
                    if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                        graph[name].add(candidate)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert graph["editrobust.config"] and "editrobust.variant_names" in graph["editrobust.config"]  # the graph is real
    assert cycles(graph) == []


def test_the_grammar_and_path_modules_import_nothing_of_the_package():
    graph = import_graph()
    assert graph["editrobust.variant_names"] == set() and graph["editrobust.paths"] == set()


def test_config_validation_imports_no_model_or_plotting_code(repo):
    code = ("import sys; from editrobust.config import load_yaml, validate_config; "
            "validate_config(load_yaml('config/config.yaml')); validate_config(load_yaml('config/paper.yaml')); "
            "print(sorted(m for m in ('torch', 'diffusers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_snakemake_lint_is_clean(repo, snakemake_exe):
    proc = subprocess.run([snakemake_exe, "--lint"], cwd=repo, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr


def test_rule_files_are_wiring(repo):
    """No function definitions in rule files: the logic lives in editrobust.workflow."""
    for smk in sorted((repo / "workflow" / "rules").glob("*.smk")):
        assert not re.search(r"^\s*def \w+\(", smk.read_text(), flags=re.M), smk.name


@pytest.mark.parametrize("env_file", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_each_conda_environment_parses_and_installs_the_project(env_file, tmp_path):
    """Conda channels are unreachable here, so the conda part is only parsed; its pip part (what
    conda hands pip, with EDITROBUST_ROOT set by the Snakefile) is resolved by pip for real."""
    env = yaml.safe_load(env_file.read_text())
    deps = env["dependencies"]
    assert any(str(d).startswith("python") for d in deps) and "pip" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    assert len(pip) == 1, "the environment installs the project, not a copy of its dependency list"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("\n".join(pip) + "\n")
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-build-isolation", "--quiet",
                    "--report", str(report), "-r", str(requirements)],
                   env={**os.environ, "EDITROBUST_ROOT": str(REPO)}, check=True, capture_output=True, timeout=300)
    installs = json.loads(report.read_text())["install"]
    assert [i["metadata"]["name"] for i in installs] == ["editrobust"]
    # every rule names it
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        rules = len(re.findall(r"^\s*rule(\s+\w+)?\s*:\s*$", smk.read_text(), flags=re.M))
        conda = len(re.findall(r"^\s*conda:\s*$", smk.read_text(), flags=re.M))
        aggregates = len(re.findall(r"^rule (all|tables|figures|report|annotation_kits|robustness|power):", smk.read_text(),
                                    flags=re.M))
        assert conda == rules - aggregates, smk.name


def test_the_documents_stand_on_their_own(repo):
    """Nothing in the project points to files outside it (a user who clones it has no ../shared)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\.\./shared|shared/(reference|study|notes)|ARCHITECTURE\.md|\b\w+\.md §\d")
    offenders = [f for f in tracked if f.endswith((".py", ".md", ".yaml", ".smk", ".rst", ".toml"))
                 and f != "tests/test_architecture.py" and pattern.search((repo / f).read_text())]
    assert offenders == []
