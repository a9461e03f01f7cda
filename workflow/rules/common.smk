# Config validation and the one object every rule asks for its inputs and params
# (editrobust.workflow.Rules: the logic lives in the library, where tests reach it).
from editrobust import paths
from editrobust import variant_names
from editrobust.config import ConfigError, canonical, validate_config
from editrobust.workflow import Rules

try:
    config.update(validate_config(config))
except ConfigError as e:
    raise WorkflowError(str(e)) from None

R = Rules(config)
ENV = "../../envs/editrobust.yaml"  # for `--sdm conda`; it installs this project


wildcard_constraints:
    model=variant_names.NAME,
    promptset=variant_names.NAME,
    scorer=variant_names.NAME,
    editor=variant_names.NAME,
    layer="[0-9]+",
    corpus=variant_names.NAME,
    variant=variant_names.WILDCARD,
