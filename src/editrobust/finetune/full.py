"""Full fine-tuning (`examples/text_to_image/train_text_to_image.py`): every denoiser parameter.

Text encoder: the official script trains the UNet only, and so does this method by default
(`train_text_encoder: false`, which keeps the toy world's results). The study says full fine-tuning
"updates all parameters of the base model" (its Sec. 3.2), and ReFACT's edits live in the text
encoder, which a UNet-only fine-tune can barely reverse. So the paper grid's `full` sets
`train_text_encoder: true` (both text encoders on SDXL, CLIP-L on FLUX; T5 stays frozen), at the
recipe's learning rate, and reports the script as it is beside it (`full_unet`): config/paper.yaml.
The VAE is never trained (no reference recipe trains it; the latent cache is shared by every
fine-tune).

Options (defaults): AdamW lr 1e-5 with warm-up `lr_warmup_steps`, weight decay 1e-2, gradient-norm
clipping 1.0, and an EMA of the trained weights (`use_ema`, `ema_decay` 0.9999, effective decay
min(decay, (1 + s) / (10 + s)) as `diffusers.training_utils.EMAModel`); with EMA on, the variant
stores the EMA weights, as the script saves the EMA UNet.
"""

from __future__ import annotations

from pathlib import Path

from editrobust.finetune.method import COMMON, Finetuner, write_delta_files
from editrobust.plugins import Param

# full and DreamBooth train whole modules and may keep an EMA of them
MODULE_PARAMS = {
    "train_text_encoder": Param({"type": "boolean"}, False,
                                doc="also train the text encoder(s), at the same lr (the study's full fine-tuning "
                                    "\"updates all parameters\": the paper grid's `full`). Off by default, as in the "
                                    "official scripts (the paper grid's `full_unet`)"),
    "use_ema": Param({"type": "boolean"}, False, doc="keep an EMA of the trained weights (diffusers' `EMAModel`) and store it"),
    "ema_decay": Param({"type": "number", "minimum": 0, "maximum": 1}, 0.9999, doc="the EMA's decay"),
}


class FullFinetune(Finetuner):
    """Full fine-tuning: every UNet (FLUX: transformer) parameter, on the dataset's images and captions."""

    name = "full"
    params = {**COMMON, **MODULE_PARAMS}

    def trained_components(self, pipe) -> list[str]:
        from editrobust.finetune.objectives import denoiser_name, text_encoder_names

        comps = [denoiser_name(pipe)]
        if self.settings["train_text_encoder"]:
            comps += text_encoder_names(pipe)
        return comps

    def setup(self, pipe):
        self.freeze(pipe)
        for comp in self.trained_components(pipe):
            getattr(pipe, comp).requires_grad_(True)
        return self.named_trainable(pipe, self.trained_components(pipe))

    def export(self, pipe, out_dir: Path) -> dict:
        return write_delta_files(pipe, self.trained_components(pipe), out_dir)
