"""Training objectives per model family: per-sample losses with gradients through the text encoders.

- SD1.x (`sd`): epsilon noise prediction (or v-prediction if the scheduler says so) on DDPM's
  `add_noise`, conditioned on `text_encoder(ids)[0]` (ids padded to the tokenizer's length, no
  attention mask), as `train_text_to_image.py` does.
- SDXL (`sdxl`): the same loss; the condition is the concatenation of both encoders'
  `hidden_states[-2]`, the pooled `text_embeds` of `text_encoder_2`, and the six micro-conditioning
  numbers `add_time_ids` = (orig h, orig w, crop top, crop left, target h, target w) of a
  centre-cropped square image of the training resolution.
- FLUX (`flux`): rectified flow matching. `x_t = (1 - σ) x0 + σ ε`, target `ε - x0`, σ ~ U(0, 1),
  on 2x2-packed latents with their position ids; the condition is CLIP's pooled output and T5's
  sequence (schnell: no guidance embedding). Latents are `(z - shift) * scale` as FLUX's VAE asks.

The timesteps, noise and σ are drawn from the caller's generator, so a run is reproducible and
resumable. Nothing here is wrapped in `no_grad`: frozen modules simply have `requires_grad=False`,
and gradients still flow through them to a trained text encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from editrobust.models.components import model_family


def scale_latents(pipe, z: torch.Tensor) -> torch.Tensor:
    """Unscaled VAE latents -> the diffusion model's latent space."""
    cfg = pipe.vae.config
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return (z - shift) * cfg.scaling_factor


def tokenize(tokenizer, prompts: list[str], max_length: int | None = None) -> torch.Tensor:
    return tokenizer(prompts, padding="max_length", max_length=max_length or tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.float(), target.float(), reduction="none").flatten(1).mean(1)


def _noise_schedule(pipe):
    """The DDPM training schedule matching the pipeline's sampler (same betas and prediction type)."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type", "trained_betas")
    cfg = {k: pipe.scheduler.config[k] for k in keys if k in pipe.scheduler.config}
    return DDPMScheduler(**cfg)


def _epsilon_loss(pipe, z0: torch.Tensor, generator: torch.Generator, unet_kwargs) -> torch.Tensor:
    sched = _noise_schedule(pipe)
    device = z0.device
    noise = torch.randn(z0.shape, generator=generator).to(device)
    t = torch.randint(0, sched.config.num_train_timesteps, (len(z0),), generator=generator).to(device)
    zt = sched.add_noise(z0, noise, t)
    pred = pipe.unet(zt, t, **unet_kwargs).sample
    target = sched.get_velocity(z0, noise, t) if sched.config.prediction_type == "v_prediction" else noise
    return _per_sample_mse(pred, target)


def sd_loss(pipe, z0: torch.Tensor, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
    te = pipe.text_encoder
    hidden = te(tokenize(pipe.tokenizer, prompts).to(_device(te)))[0]
    return _epsilon_loss(pipe, z0, generator, dict(encoder_hidden_states=hidden.to(z0.dtype)))


def sdxl_loss(pipe, z0: torch.Tensor, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
    states, pooled = [], None
    for tok, te in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        out = te(tokenize(tok, prompts).to(_device(te)), output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]  # the last encoder's (text_encoder_2's) projected pooled output
    size = z0.shape[-1] * pipe.vae_scale_factor
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=z0.dtype, device=z0.device).repeat(len(z0), 1)
    cond = dict(encoder_hidden_states=torch.cat(states, dim=-1).to(z0.dtype),
                added_cond_kwargs={"text_embeds": pooled.to(z0.dtype), "time_ids": time_ids})
    return _epsilon_loss(pipe, z0, generator, cond)


def flux_loss(pipe, z0: torch.Tensor, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
    te, te2 = pipe.text_encoder, pipe.text_encoder_2
    pooled = te(tokenize(pipe.tokenizer, prompts).to(_device(te)), output_hidden_states=False).pooler_output
    max_len = min(pipe.tokenizer_2.model_max_length, 512)
    seq = te2(tokenize(pipe.tokenizer_2, prompts, max_len).to(_device(te2)), output_hidden_states=False)[0]
    b, c, h, w = z0.shape
    device, dtype = z0.device, z0.dtype
    noise = torch.randn(z0.shape, generator=generator).to(device)
    sigma = torch.rand(b, generator=generator).to(device)
    xt = (1.0 - sigma[:, None, None, None]) * z0 + sigma[:, None, None, None] * noise
    pack = type(pipe)._pack_latents
    pred = pipe.transformer(
        hidden_states=pack(xt, b, c, h, w),
        timestep=sigma.to(dtype),  # FluxPipeline passes t / 1000 = σ
        guidance=None,
        pooled_projections=pooled.to(dtype),
        encoder_hidden_states=seq.to(dtype),
        txt_ids=torch.zeros(seq.shape[1], 3, device=device, dtype=dtype),
        img_ids=type(pipe)._prepare_latent_image_ids(b, h // 2, w // 2, device, dtype),
        return_dict=False,
    )[0]
    return _per_sample_mse(pred, pack(noise - z0, b, c, h, w))


OBJECTIVES = {"sd": sd_loss, "sdxl": sdxl_loss, "flux": flux_loss}


def per_sample_loss(pipe, z0: torch.Tensor, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
    """(B,) losses of the pipeline's family on scaled latents `z0` and their prompts."""
    return OBJECTIVES[model_family(pipe)](pipe, z0, prompts, generator)


def denoiser(pipe) -> torch.nn.Module:
    """The UNet (SD1.x, SDXL) or the transformer (FLUX)."""
    return pipe.transformer if model_family(pipe) == "flux" else pipe.unet


def denoiser_name(pipe) -> str:
    return "transformer" if model_family(pipe) == "flux" else "unet"


def text_encoder_names(pipe) -> list[str]:
    """The text encoders an adapter is put on: both CLIPs on SDXL, only CLIP-L on FLUX (T5 stays
    frozen, as `train_dreambooth_lora_flux.py --train_text_encoder` does)."""
    return ["text_encoder", "text_encoder_2"] if model_family(pipe) == "sdxl" else ["text_encoder"]
