"""Text-encoder LoRA and DoRA: an adapter on CLIP's attention projections, UNet frozen.

As in the paper, the adapter goes on the text encoder(s) **only** (`q_proj, k_proj, v_proj,
out_proj`; both CLIPs on SDXL, CLIP-L only on FLUX). The official scripts always add a UNet
adapter too; here the UNet is frozen (`requires_grad=False`) but not wrapped in `no_grad`, so the
loss's gradient flows through it to the adapter. Config: `LoraConfig(r=rank, lora_alpha=alpha,
init_lora_weights="gaussian")`, the reference scripts' initialisation.

- `lora`: AdamW (lr 1e-4, the DreamBooth-LoRA script's shared lr).
- `dora`: the same with `use_dora=True` (a learned magnitude per output row) and the Prodigy
  optimizer with the recommended flags (lr 1.0, betas (0.9, 0.99), weight decay 0.01, bias
  correction, safeguard warm-up, decoupled decay). The loop logs Prodigy's `d * lr` per step.

Adapters are injected with `peft.inject_adapter_in_model` (transformers 5's `add_adapter` wants a
newer peft than 0.21), stay fp32, and are saved in the diffusers LoRA format
(`save_lora_weights(..., text_encoder_lora_layers=..., text_encoder_lora_adapter_metadata=...)`
-> `pytorch_lora_weights.safetensors`), with the LoraConfig as metadata so α != r and DoRA load
right. `models.variants.load_pipeline` loads it and fuses it into the text-encoder weights.
"""

from __future__ import annotations

from pathlib import Path

from editrobust.finetune.method import COMMON, Finetuner, with_default
from editrobust.plugins import Param

ADAPTER_NAME = "default"
ADAPTER_FILE = "pytorch_lora_weights.safetensors"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj"]
ADAPTER_PARAMS = {
    "rank": Param({"type": "integer", "minimum": 1}, 4, doc="adapter rank r"),
    "alpha": Param({"type": "number", "exclusiveMinimum": 0}, 4, doc="α (the adapter is scaled by α/r)"),
    "target_modules": Param({"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                            TARGET_MODULES, doc="the adapted linear layers of the text encoder(s)"),
}


class LoraFinetune(Finetuner):
    """LoRA on the text encoder(s) (attention projections), UNet frozen; AdamW."""

    name = "lora"
    use_dora = False
    params = {**COMMON, "lr": with_default(COMMON["lr"], 1e-4), **ADAPTER_PARAMS}

    def lora_config(self):
        from peft import LoraConfig

        p = self.settings
        return LoraConfig(r=p["rank"], lora_alpha=p["alpha"], init_lora_weights="gaussian",
                          target_modules=list(p["target_modules"]), use_dora=self.use_dora)

    def setup(self, pipe):
        from peft import inject_adapter_in_model

        self.freeze(pipe)
        from editrobust.finetune.objectives import text_encoder_names

        comps = text_encoder_names(pipe)
        for comp in comps:
            inject_adapter_in_model(self.lora_config(), getattr(pipe, comp), adapter_name=ADAPTER_NAME)
            for name, param in getattr(pipe, comp).named_parameters():
                # only the adapter trains; it stays fp32 whatever the base dtype
                param.requires_grad_("lora_" in name)
                if "lora_" in name:
                    param.data = param.data.float()
        return self.named_trainable(pipe, comps)

    def export(self, pipe, out_dir: Path) -> dict:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        from editrobust.finetune.objectives import text_encoder_names

        comps = text_encoder_names(pipe)
        kwargs, metadata = {}, self.lora_config().to_dict()
        metadata["target_modules"] = sorted(metadata["target_modules"])  # a set in peft; JSON needs a list
        for comp in comps:
            layers = get_peft_model_state_dict(getattr(pipe, comp), adapter_name=ADAPTER_NAME)
            kwargs[f"{comp}_lora_layers"] = {k: v.detach().cpu().contiguous()
                                             for k, v in convert_state_dict_to_diffusers(layers).items()}
            kwargs[f"{comp}_lora_adapter_metadata"] = metadata
        type(pipe).save_lora_weights(str(out_dir), safe_serialization=True, **kwargs)
        return {"components": [], "adapter": {"format": "diffusers_lora", "file": ADAPTER_FILE, "components": comps,
                                              "rank": self.settings["rank"], "alpha": self.settings["alpha"],
                                              "use_dora": self.use_dora}}


class DoraFinetune(LoraFinetune):
    """DoRA on the text encoder(s) (a learned magnitude per output row), UNet frozen; Prodigy."""

    name = "dora"
    use_dora = True
    params = {**LoraFinetune.params, "lr": with_default(COMMON["lr"], 1.0),
              "optimizer": with_default(COMMON["optimizer"], "prodigy"),
              "adam_beta2": with_default(COMMON["adam_beta2"], 0.99),
              "adam_weight_decay": with_default(COMMON["adam_weight_decay"], 0.01)}
