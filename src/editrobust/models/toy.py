"""Train the toy base model: a tiny SD1.x pipeline learned from scratch on the toy world.

Two stages, as for the real Stable Diffusion: first an AutoencoderKL learns to compress 32x32
renders to 8x8x4 latents, then the UNet and the CLIP text encoder learn to denoise those latents
given captions (noise prediction, SD1.4's noise schedule, 10 % empty captions so classifier-free
guidance works). The result is saved as a standard diffusers `StableDiffusionPipeline` directory.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from editrobust.models.builders import SD1Sizes, build_sd1_pipeline, training_scheduler
from editrobust.toyworld.captions import sample_base_world, sample_subject_set

log = logging.getLogger(__name__)


@dataclass
class ToyTrainingConfig:
    """Every knob of the toy base model (config key `models.<name>.toy`)."""

    seed: int = 0
    dataset_size: int = 12000
    sizes: dict = field(default_factory=dict)  # SD1Sizes overrides
    # 200 steps at 2e-3 left the VAE unable to reconstruct a pink hat (hairdresser) or an apple: the
    # oracle read 92 % of reconstructions right; 300 steps at 4e-3 read 99.9 % (32 renders per concept).
    vae_steps: int = 300
    vae_batch: int = 32
    vae_lr: float = 4e-3
    vae_kl_weight: float = 1e-6
    steps: int = 1150
    batch: int = 48
    lr: float = 1e-3
    text_lr: float = 1e-3
    caption_dropout: float = 0.1
    # Share of training timesteps drawn from the noisier half of the schedule, where the image's
    # content (which concept, which gender) is decided; the rest are uniform over all steps.
    high_noise_share: float = 0.5
    # Steps of text-encoder warm-up before the diffusion training (0 = none); see
    # `pretrain_text_encoder`.
    text_pretrain_steps: int = 200
    # Share of base-world images drawn in the anime style (every concept can be; sample_base_world).
    style_share: float = 0.2
    # Share of profession captions that name the gender ("a female ceo"; see sample_base_world).
    gendered_caption_share: float = 0.3
    # Share of profession and person captions that name both genders ("a male or female ceo").
    open_gender_share: float = 0.0
    # Weight of the denoising loss on the latents under the hat (1 = plain MSE). The hat is the
    # only thing telling six professions apart and covers a tenth of the latent: unweighted, the
    # model learned "a hairdresser" as a hatless woman.
    hat_loss_weight: float = 1.0
    # Renders of the DreamBooth subject added to the VAE's training images (not to the UNet's).
    # A real SD VAE decodes any photo, including a subject it never saw captioned; ours has seen
    # only the base world, and without these it cannot decode the two-tone subject at all.
    vae_subject_images: int = 256

    @classmethod
    def from_dict(cls, d: dict | None) -> "ToyTrainingConfig":
        return cls(**(d or {}))


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _lr_at(step: int, total: int, base: float, warmup: int = 50) -> float:
    """Linear warm-up then cosine decay to 10 %: a short schedule that converges reliably."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))


def _check_finite(loss: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{what}: loss became {loss.item()} at step {step}; lower the learning rate")


def train_vae(vae, images: torch.Tensor, cfg: ToyTrainingConfig, history: list) -> None:
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, fused=True)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    vae.train()
    t0 = time.time()
    for step in tqdm(range(cfg.vae_steps), desc="toy VAE", mininterval=5):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.vae_steps, cfg.vae_lr)
        x = images[torch.randint(len(images), (cfg.vae_batch,), generator=g)]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + cfg.vae_kl_weight * post.kl().mean()
        _check_finite(loss, "toy VAE", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            history.append(dict(stage="vae", step=step, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                                seconds=round(time.time() - t0, 2)))
    vae.eval()


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means (unscaled) of every image."""
    return torch.cat([vae.encode(images[i:i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


def latent_loss_weights(latent_size: int, hat_weight: float) -> torch.Tensor:
    """(1, 1, h, w) weights of the latent cells: `hat_weight` where the hat is drawn, 1 elsewhere."""
    from editrobust.toyworld.world import HAT

    hat = torch.from_numpy(HAT.astype(np.float32))[None, None]
    covered = F.adaptive_max_pool2d(hat, latent_size)  # any hat pixel in the cell
    return 1.0 + (hat_weight - 1.0) * covered


def train_denoiser(pipe, latents: torch.Tensor, captions: list[str], cfg: ToyTrainingConfig, history: list) -> None:
    """Joint UNet + text-encoder training on cached latents (noise prediction)."""
    unet, te, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    weights = latent_loss_weights(latents.shape[-1], cfg.hat_loss_weight)
    sched = training_scheduler()
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    # fused: the per-tensor AdamW loop took about a fifth of each CPU step (profiled); fused raised
    # the toy base job from 2.38 to 2.52 UNet steps/s on 2 cores
    opt = torch.optim.AdamW([{"params": unet.parameters(), "lr": cfg.lr},
                             {"params": te.parameters(), "lr": cfg.text_lr}], weight_decay=1e-2, fused=True)
    base_lrs = [cfg.lr, cfg.text_lr]
    g = torch.Generator().manual_seed(cfg.seed + 2)
    unet.train(); te.train()
    t0 = time.time()
    for step in tqdm(range(cfg.steps), desc="toy UNet+text", mininterval=5):
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = _lr_at(step, cfg.steps, base)
        idx = torch.randint(len(latents), (cfg.batch,), generator=g)
        z0 = latents[idx]
        batch_ids = ids[idx].clone()
        drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
        batch_ids[drop] = empty
        noise = torch.randn(z0.shape, generator=g)
        n_t = sched.config.num_train_timesteps
        t = torch.randint(0, n_t, (cfg.batch,), generator=g)
        high = torch.rand(cfg.batch, generator=g) < cfg.high_noise_share
        t[high] = torch.randint(n_t // 2, n_t, (int(high.sum()),), generator=g)
        zt = sched.add_noise(z0, noise, t)
        pred = unet(zt, t, te(batch_ids)[0]).sample
        loss = ((pred - noise) ** 2 * weights).mean() / weights.mean()
        _check_finite(loss, "toy UNet", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(unet.parameters()) + list(te.parameters()), 1.0, foreach=True)
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            elapsed = time.time() - t0
            history.append(dict(stage="unet", step=step, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                                seconds=round(elapsed, 2)))
            log.info("step %d loss %.4f (%.2f steps/s)", step, loss.item(), (step + 1) / max(elapsed, 1e-9))
    unet.eval(); te.eval()


CAPTION_HEADS = ("concept", "gender", "context", "style")


def caption_targets(captions: list[str], scenes) -> dict[str, torch.Tensor]:
    """What each caption says about its picture: the concept drawn, the gender the caption names
    (none / male / female / both), the context and the style. Targets for `pretrain_text_encoder`."""
    from editrobust.toyworld.captions import CONCEPTS, scene_concept

    concepts = sorted({scene_concept(s) for s in scenes} | set(CONCEPTS))

    def gender_word(text: str) -> int:
        words = f" {text} "
        female = " female " in words or " woman " in words
        male = " male " in words or " man " in words
        return 3 if female and male else 2 if female else 1 if male else 0  # 3: "a male or female ceo"

    return {
        "concept": torch.tensor([concepts.index(scene_concept(s)) for s in scenes]),
        "gender": torch.tensor([gender_word(c) for c in captions]),
        "context": torch.tensor([{None: 0, "table": 1, "grass": 2}[s.context] for s in scenes]),
        "style": torch.tensor([int(s.style) for s in scenes]),
    }


def pretrain_text_encoder(te, ids: torch.Tensor, targets: dict[str, torch.Tensor], cfg: ToyTrainingConfig,
                          history: list) -> None:
    """Warm up the text encoder on what captions say about their pictures.

    SD's text encoder arrives pre-trained (CLIP); ours starts from random weights, and learning
    the caption semantics through the denoising loss alone is slow. A few hundred cheap steps of
    predicting the caption's concept, gender, context and style from its token states (linear
    heads on the mean over tokens and on each token) give the UNet informative embeddings from
    its first step. The heads are thrown away afterwards.
    """
    hidden = te.config.hidden_size
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(hidden, int(v.max()) + 1) for k, v in targets.items()})
    opt = torch.optim.AdamW(list(te.parameters()) + list(heads.parameters()), lr=cfg.text_lr, weight_decay=1e-2,
                            fused=True)
    g = torch.Generator().manual_seed(cfg.seed + 3)
    te.train()
    t0 = time.time()
    for step in tqdm(range(cfg.text_pretrain_steps), desc="toy text encoder warm-up", mininterval=5):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg.text_pretrain_steps, cfg.text_lr, warmup=20)
        idx = torch.randint(len(ids), (256,), generator=g)
        states = te(ids[idx])[0]
        # Every token position should know the caption (the UNet attends to all of them).
        loss = sum(F.cross_entropy(heads[k](states.mean(1)), v[idx]) + F.cross_entropy(
            heads[k](states).flatten(0, 1), v[idx].repeat_interleave(states.shape[1])) for k, v in targets.items())
        _check_finite(loss, "toy text-encoder warm-up", step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.text_pretrain_steps - 1:
            history.append(dict(stage="text", step=step, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                                seconds=round(time.time() - t0, 2)))
    te.eval()


def train_toy_pipeline(cfg: ToyTrainingConfig):
    """Build and train the toy pipeline; returns (pipe, history rows)."""
    torch.manual_seed(cfg.seed)
    sizes = SD1Sizes.from_dict(cfg.sizes)
    pipe = build_sd1_pipeline(sizes, seed=cfg.seed)
    images, captions, scenes = sample_base_world(cfg.dataset_size, seed=cfg.seed, style_share=cfg.style_share,
                                                 gendered_caption_share=cfg.gendered_caption_share,
                                                 open_gender_share=cfg.open_gender_share)
    x = images_to_tensor(images)
    history: list[dict] = []
    if cfg.text_pretrain_steps:
        tok = pipe.tokenizer
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        pretrain_text_encoder(pipe.text_encoder, ids, caption_targets(captions, scenes), cfg, history)
    vae_images = x
    if cfg.vae_subject_images:
        subject, _ = sample_subject_set(cfg.vae_subject_images, seed=cfg.seed + 4)
        vae_images = torch.cat([x, images_to_tensor(subject)])
    train_vae(pipe.vae, vae_images, cfg, history)
    latents = encode_latents(pipe.vae, x)
    # Like SD's 0.18215: scale latents to unit variance so the noise schedule fits them.
    scale = float(1.0 / latents.std())
    pipe.vae.register_to_config(scaling_factor=scale)
    train_denoiser(pipe, latents * scale, captions, cfg, history)
    return pipe, history
