"""One plugin shape: an editor or a scorer of your own is one module and one config entry.

The workflow test writes a new editor module and a new scorer module to a temporary directory,
puts it on PYTHONPATH, names them in a nano config by import path (`package.module:Class`) and
runs Snakemake as a subprocess: no file of the project is touched.
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from editrobust.config import ConfigError, load_yaml, validate_config
from editrobust.docs import render
from editrobust.plugins import Derived

from conftest import REPO, SCHEMA

EDITOR_MODULE = '''
"""A new editor: scales the UNet's input convolution bias (a toy edit whose effect is exact)."""
from editrobust.editors import Editor
from editrobust.plugins import Param


class ScaleConvIn(Editor):
    """Multiplies conv_in.bias by `factor`."""

    name = "scale_conv_in"
    params = {"factor": Param({"type": "number"}, 2.0, doc="the multiplier")}

    def run(self, pipe, job):
        bias = pipe.unet.state_dict()["conv_in.bias"]
        return {"unet": {"conv_in.bias": (bias * job.entry["factor"]).contiguous()}}, {"scaled": True}
'''

SCORER_MODULE = '''
"""A new scorer: the mean brightness of each image."""
import numpy as np

from editrobust.plugins import Param
from editrobust.scoring import Scorer
from editrobust.scoring.common import finish, id_frame, load_images


class Brightness(Scorer):
    """Mean pixel value of each image, scaled."""

    name = "brightness"
    params = {"scale": Param({"type": "number"}, 1.0, doc="multiplies the brightness")}

    def run(self, index, image_dir, params, **inputs):
        out = id_frame(index)
        out["brightness"] = [params["scale"] * float(np.mean(im)) for im in load_images(index, image_dir)]
        return finish(out, "brightness", "brightness-1")
'''


@pytest.fixture(scope="module")
def plugin_run(repo, snakemake_exe, tmp_path_factory):
    """(workdir): the nano config with an external editor and scorer, run through Snakemake."""
    workdir = tmp_path_factory.mktemp("plugins")
    plugins = workdir / "my_plugins"
    plugins.mkdir()
    (plugins / "my_editors.py").write_text(textwrap.dedent(EDITOR_MODULE))
    (plugins / "my_scorers.py").write_text(textwrap.dedent(SCORER_MODULE))
    cfg = yaml.safe_load((repo / "tests/configs/nano.yaml").read_text())
    cfg["editors"] = {"scaled": {"method": "my_editors:ScaleConvIn", "factor": 3.0}}
    cfg["scorers"] = {"bright": {"kind": "my_scorers:Brightness"}}
    cfg["evaluations"] = [{"model": "nano", "promptset": "concepts", "variants": ["base", "ed-scaled"],
                           "scorers": ["bright"]}]
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")]))}
    cmd = [snakemake_exe, "-s", str(repo / "Snakefile"), "--directory", str(workdir), "--configfile", str(configfile),
           "--cores", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return workdir


def test_an_editor_of_your_own_is_one_module_and_one_config_entry(plugin_run):
    models = plugin_run / "results/models/nano"
    info = yaml.safe_load((models / "ed-scaled/variant.json").read_text())
    assert info["method"] == "my_editors:ScaleConvIn" and info["params"]["factor"] == 3.0
    assert info["result"] == {"scaled": True}
    delta = load_file(str(models / "ed-scaled/unet.safetensors"))
    base = load_file(str(models / "base/unet/diffusion_pytorch_model.safetensors"))
    assert list(delta) == ["conv_in.bias"]
    assert (delta["conv_in.bias"] - 3.0 * base["conv_in.bias"]).abs().max() < 1e-6
    # and its images were sampled and scored like any variant's
    assert len(pd.read_csv(plugin_run / "results/scores/nano/ed-scaled/concepts/bright.csv")) > 0


def test_a_scorer_of_your_own_is_one_module_and_one_config_entry(plugin_run):
    scores = pd.read_csv(plugin_run / "results/scores/nano/base/concepts/bright.csv")
    assert scores["scorer"].eq("brightness").all() and scores["brightness"].between(0, 255).all()
    index = pd.read_csv(plugin_run / "results/samples/nano/base/concepts/index.csv")
    assert scores["file"].tolist() == index["file"].tolist()
    summary = pd.read_csv(plugin_run / "results/summaries/nano/base/concepts/bright.csv")
    assert len(summary) > 0


def test_a_plugin_that_cannot_be_imported_is_named():
    cfg = load_yaml(REPO / "tests/configs/nano.yaml")
    cfg["editors"]["erase"]["method"] = "no_such_module:Editor"
    with pytest.raises(ConfigError, match=r"editors.erase.method: method 'no_such_module:Editor': cannot import "
                                          r"module 'no_such_module'.*PYTHONPATH"):
        validate_config(cfg, SCHEMA)


def test_the_readme_documents_every_declared_parameter_and_default():
    """config/README.md's parameter tables are generated from the declarations (editrobust.docs):
    a changed default, type or key that is not regenerated fails here."""
    readme = (REPO / "config/README.md").read_text()
    assert render(readme) == readme, "config/README.md is stale: run python -m editrobust.docs config/README.md"


def test_validation_fills_every_declared_default():
    from editrobust.config import plugin_registries

    cfg = validate_config(load_yaml(REPO / "config/config.yaml"), SCHEMA)
    for section, registry in plugin_registries().items():
        for name, entry in (cfg.get(section) or {}).items():
            plugin = registry.get(entry[registry.key])
            missing = [k for k, p in plugin.all_params().items()
                       if k not in entry and (p.static_default or isinstance(p.default, Derived))]
            assert not missing, (section, name, missing)
