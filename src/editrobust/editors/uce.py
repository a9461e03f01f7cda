"""Unified Concept Editing (UCE; Gandikota et al., WACV 2024): erase/moderate and debias.

Reference: the authors' code, rohitgandikota/unified-concept-editing (HEAD 28c81ed, 2025:
`trainscripts/uce_sd_erase.py`, `uce_sd_debias.py`, `uce_flux_edit.py`; the paper-era
`train-scripts/train_erase.py` and `train_debias.py` are in its history, e.g. 35e91e2). We follow
the **new** semantics: one embedding per concept, its last sub-word token; the paper-era multi-token windows are kept as
`token_mode="window"` (SD1.x/SDXL) for parity with the paper's numbers.

UCE edits linear maps that read text embeddings, in closed form:

    W_new = (λ W_old + s_e Σ_E v_i* c_iᵀ + s_p Σ_P (W_old c_j) c_jᵀ) · (λ I + s_e Σ_E c_i c_iᵀ + s_p Σ_P c_j c_jᵀ)⁻¹
             `------------------------ mat1 ------------------------´   `------------------ mat2 ------------------´

Edited maps: every UNet cross-attention `attn2.to_k`/`attn2.to_v` on SD1.x/SD2.x/SDXL; on
FLUX `transformer.context_embedder` (fed the T5 token embedding) and
`transformer.time_text_embed.text_embedder.linear_1` (fed the pooled CLIP embedding).

FLUX bias (decision): these two maps have a bias b, but only the weight is edited. We take the
targets without bias, v* = F.linear(c_guide, W_old) = W_old c_guide. Then the edited module outputs
W_new c_e + b ≈ W_old c_guide + b, exactly the guide's original output, and a preserved concept
keeps W_new c_j + b ≈ W_old c_j + b, its original output. The upstream script takes v* = module(c)
(bias included), so edited *and preserved* directions come out ≈ W c + 2b (a quirk of `uce_flux_edit.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from editrobust.editors.common import check_token_length, eval_mode, require_nonempty, split_concepts
from editrobust.models.components import (Delta, component, delta_applied, execution_device, model_family,
                                          new_tensor)

TOKENS, POOLED = "tokens", "pooled"  # which text embedding a module reads

# expand_prompts templates of uce_sd_erase.py (§1.5)
EXPAND_TEMPLATES = {
    "art": ("painting by {}", "art by {}", "artwork by {}", "picture by {}", "style of {}"),
    "object": ("image of {}", "photo of {}", "portrait of {}", "picture of {}", "painting of {}"),
}
DEFAULT_GUIDE = {"art": "art", "object": ""}
FLUX_MODULES = {"context_embedder": TOKENS, "time_text_embed.text_embedder.linear_1": POOLED}


# ------------------------------------------------------------------------------------ closed form
def _right_matrix(edit_keys: torch.Tensor, preserve_keys: torch.Tensor | None, lamb: float,
                  erase_scale: float, preserve_scale: float) -> torch.Tensor:
    """mat2 = λI + s_e Σ_E c_i c_iᵀ + s_p Σ_P c_j c_jᵀ (keys are rows)."""
    d = edit_keys.shape[-1]
    mat2 = lamb * torch.eye(d, dtype=torch.float32, device=edit_keys.device)
    mat2 = mat2 + erase_scale * edit_keys.T @ edit_keys
    if preserve_keys is not None and len(preserve_keys):
        mat2 = mat2 + preserve_scale * preserve_keys.T @ preserve_keys
    return mat2


def solve_uce(W_old: torch.Tensor, edit_keys: torch.Tensor, edit_targets: torch.Tensor,
              preserve_keys: torch.Tensor | None, lamb: float = 0.5, erase_scale: float = 1.0,
              preserve_scale: float = 1.0) -> torch.Tensor:
    """UCE's closed form for one linear map, in fp32.

    `W_old` is d_out×d_in; `edit_keys` c_i are n×d_in rows, `edit_targets` v_i* are n×d_out rows,
    `preserve_keys` c_j are m×d_in rows (targets W_old c_j). Returns
    `W_new = mat1 · mat2⁻¹`, computed as the solution X of X·mat2 = mat1 (no explicit inverse).
    """
    W = W_old.float()
    c, v = edit_keys.float().to(W.device), edit_targets.float().to(W.device)
    p = None if preserve_keys is None else preserve_keys.float().to(W.device)
    mat1 = lamb * W + erase_scale * v.T @ c
    if p is not None and len(p):
        mat1 = mat1 + preserve_scale * (p @ W.T).T @ p
    mat2 = _right_matrix(c, p, lamb, erase_scale, preserve_scale)
    return torch.linalg.solve(mat2, mat1, left=False)


def uce_transform(edit_keys: torch.Tensor, edit_sources: torch.Tensor, preserve_keys: torch.Tensor | None,
                  lamb: float = 0.5, erase_scale: float = 1.0, preserve_scale: float = 1.0) -> torch.Tensor:
    """T with `W_new = W_old · T` when every target is `W_old · source` (an identity of the closed form).

    `T = (λI + s_e Σ c_i* c_iᵀ + s_p Σ c_j c_jᵀ) · M⁻¹`, `M = mat2`. One T serves every module that
    reads the same embeddings (all cross-attention maps of a UNet). Not valid when targets are not
    linear in W_old (old debias, `tensor` technique) — and our FLUX targets are bias-free, so valid there too.
    """
    c, s = edit_keys.float(), edit_sources.float()
    p = None if preserve_keys is None else preserve_keys.float()
    d = c.shape[-1]
    left = lamb * torch.eye(d, device=c.device) + erase_scale * s.T @ c
    if p is not None and len(p):
        left = left + preserve_scale * p.T @ p
    return torch.linalg.solve(_right_matrix(c, p, lamb, erase_scale, preserve_scale), left, left=False)


# ----------------------------------------------------------------------------------- edited maps
@dataclass(frozen=True)
class UCEModule:
    """One linear map UCE edits: where it lives and which text embedding it reads."""

    component: str  # "unet" | "transformer"
    name: str  # module name in the component
    space: str  # TOKENS | POOLED

    @property
    def weight_key(self) -> str:
        return f"{self.name}.weight"


def uce_modules(pipe) -> list[UCEModule]:
    """The maps UCE edits on this pipeline's family."""
    if model_family(pipe) == "flux":
        names = dict(pipe.transformer.named_modules())
        missing = [n for n in FLUX_MODULES if n not in names]
        if missing:
            raise ValueError(f"FLUX transformer lacks {missing}")
        return [UCEModule("transformer", n, space) for n, space in FLUX_MODULES.items()]
    return [UCEModule("unet", name, TOKENS) for name, module in pipe.unet.named_modules()
            if "attn2" in name and name.endswith(("to_k", "to_v")) and isinstance(module, torch.nn.Linear)]


def uce_parameter_count(pipe) -> int:
    """Parameters a UCE edit writes: every weight of `uce_modules`."""
    return sum(_module_weight(pipe, m).numel() for m in uce_modules(pipe))


def _module_weight(pipe, m: UCEModule) -> torch.Tensor:
    return component(pipe, m.component).get_submodule(m.name).weight


# ------------------------------------------------------------------------------ concept embeddings
def _last_token_index(tokenizer, texts: Sequence[str], max_length: int) -> torch.Tensor:
    """idx = attention_mask.sum() − 2: the concept's last sub-word, before the end token; '' gives 0 (§1.4)."""
    mask = tokenizer(list(texts), padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt")["attention_mask"]
    return mask.sum(-1) - 2


def _flux_max_sequence_length(pipe, max_sequence_length: int | None) -> int:
    # FLUX's pipeline defaults to 512 (upstream UCE uses 256 for schnell); the tiny test model's
    # tokenizer_2 says 32. Sample with the same value: T5 runs without a mask, so padding matters.
    return max_sequence_length or min(pipe.tokenizer_2.model_max_length, 512)


def check_concepts_fit(pipe, texts: Sequence[str], max_sequence_length: int | None = None) -> None:
    """`ValueError` if any text would be truncated by a tokenizer that feeds the edited maps."""
    check_token_length(pipe.tokenizer, texts)
    if model_family(pipe) == "sdxl":
        check_token_length(pipe.tokenizer_2, texts)
    elif model_family(pipe) == "flux":
        check_token_length(pipe.tokenizer_2, texts, _flux_max_sequence_length(pipe, max_sequence_length))


def concept_embeddings(pipe, texts: Sequence[str], mode: str = "last",
                       max_sequence_length: int | None = None) -> dict[str, torch.Tensor]:
    """Text embeddings c that the edited maps read, as fp32 `{space: tensor}`.

    - SD1.x: `encode_prompt(...)[0]` (last_hidden_state after the final LayerNorm); SDXL: the same
      call gives the concatenation of both encoders' `hidden_states[-2]`. Space TOKENS.
    - FLUX: TOKENS = T5 sequence embedding (`encode_prompt[0]`) for `context_embedder`,
      POOLED = pooled CLIP (`encode_prompt[1]`) for `text_embedder.linear_1`.

    `mode="last"` gives one n×d row per text, at `idx = attention_mask.sum() − 2`;
    `mode="window"` (SD1.x/SDXL) gives the full n×L×d sequences for the old aligned windows.
    """
    encoders = [getattr(pipe, n, None) for n in ("text_encoder", "text_encoder_2")]
    with torch.no_grad(), ExitStack() as stack:
        for encoder in encoders:
            if isinstance(encoder, torch.nn.Module):
                stack.enter_context(eval_mode(encoder))  # dropout off (a config-built T5 has 0.1)
        return _concept_embeddings(pipe, list(texts), mode, max_sequence_length)


def _concept_embeddings(pipe, texts: list[str], mode: str, max_sequence_length: int | None) -> dict[str, torch.Tensor]:
    family, device = model_family(pipe), execution_device(pipe)
    if mode not in ("last", "window"):
        raise ValueError(f"mode must be 'last' or 'window', got {mode!r}")
    if family == "flux":
        if mode == "window":
            raise ValueError("token_mode='window' needs token sequences for every edited map; FLUX's pooled "
                             "CLIP embedding has none: use 'last'")
        msl = _flux_max_sequence_length(pipe, max_sequence_length)
        seq, pooled, _ = pipe.encode_prompt(prompt=texts, prompt_2=None, device=device, num_images_per_prompt=1,
                                            max_sequence_length=msl)
        idx = _last_token_index(pipe.tokenizer_2, texts, msl).to(seq.device)
        return {TOKENS: seq[torch.arange(len(texts), device=seq.device), idx].float(), POOLED: pooled.float()}
    seq = pipe.encode_prompt(prompt=texts, device=device, num_images_per_prompt=1,
                             do_classifier_free_guidance=False)[0].float()
    if mode == "window":
        return {TOKENS: seq}
    idx = _last_token_index(pipe.tokenizer, texts, pipe.tokenizer.model_max_length).to(seq.device)
    return {TOKENS: seq[torch.arange(len(texts), device=seq.device), idx]}


def _window_pair(seq_old: torch.Tensor, i_o: int, seq_new: torch.Tensor, i_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Old UCE's aligned windows (§1.4 Old): E_old[i_o : L−(F−i_o)] ↔ E_new[i_n : L−(F−i_n)], F = max(i_o, i_n).

    Both have L − F tokens and line up last sub-word ↔ last sub-word, EOS ↔ EOS, pad ↔ pad.
    """
    L, F_ = seq_old.shape[0], max(i_o, i_n)
    n = L - F_
    return seq_old[i_o:i_o + n], seq_new[i_n:i_n + n]


# --------------------------------------------------------------------------------- shared solve
@dataclass
class _System:
    """Per embedding space: edit keys c_i, sources s_i (targets v_i* = W_old s_i), preserve keys c_j."""

    keys: torch.Tensor
    sources: torch.Tensor
    preserve: torch.Tensor | None


def _solve_modules(pipe, systems: dict[str, _System], lamb: float, scale: float, preserve_scale: float,
                   residuals: dict | None = None) -> Delta:
    """Solve every edited map; targets are bias-free: v* = F.linear(source, W_old) (see module docstring).

    `residuals`, if given, gets the summed squared distances of the edited keys' outputs from
    their targets before and after the edit, and the targets' squared norm (`before`, `after`,
    `target`), over every edited map: how far the closed form got."""
    delta: Delta = {}
    for m in uce_modules(pipe):
        W_old = _module_weight(pipe, m)
        sys_ = systems[m.space]
        W32 = W_old.detach().float()
        keys = sys_.keys.to(W32.device).float()
        targets = F.linear(sys_.sources.to(W32.device), W32)
        W_new = solve_uce(W32, sys_.keys, targets, sys_.preserve, lamb, scale, preserve_scale)
        delta.setdefault(m.component, {})[m.weight_key] = new_tensor(W_new, W_old)
        if residuals is not None:
            for name, value in (("before", F.linear(keys, W32) - targets), ("after", F.linear(keys, W_new) - targets),
                                ("target", targets)):
                residuals[name] = residuals.get(name, 0.0) + float(value.pow(2).sum())
    return delta


# ------------------------------------------------------------------------------------------ erase
def _expand(edits: list[str], guides: list[str], concept_type: str) -> tuple[list[str], list[str]]:
    """expand_prompts: 5 templated copies of each edit concept, each paired with the concept's guide (§1.5).

    Upstream's SD script zips edits with *preserve* concepts here and appends the copies to the
    preserve set (a bug); we implement what its FLUX script and the documentation do.
    """
    templates = EXPAND_TEMPLATES[concept_type]
    more_edits = [t.format(e) for e in edits for t in templates]
    more_guides = [g for g in guides for _ in templates]
    return edits + more_edits, guides + more_guides


def _resolve_guides(edits: list[str], guides: str | Sequence[str] | None, concept_type: str) -> list[str]:
    guides = [DEFAULT_GUIDE[concept_type]] if guides is None else split_concepts(guides)
    if len(guides) == 1:
        guides = guides * len(edits)  # one guide broadcasts to every edit concept
    if len(guides) != len(edits):
        raise ValueError(f"got {len(edits)} edit concepts but {len(guides)} guide concepts: give one guide, "
                         f"or one per edit concept")
    return guides


def _erase_systems_last(pipe, edits, guides, preserves, max_sequence_length) -> dict[str, _System]:
    texts = list(dict.fromkeys(edits + guides + preserves))  # each distinct text encoded once
    emb = concept_embeddings(pipe, texts, "last", max_sequence_length)
    row = {t: i for i, t in enumerate(texts)}

    def rows(space, names):
        return emb[space][[row[t] for t in names]]

    return {space: _System(rows(space, edits), rows(space, guides), rows(space, preserves) if preserves else None)
            for space in emb}


def _erase_systems_window(pipe, edits, guides, preserves) -> dict[str, _System]:
    """Old semantics: each (edit, guide) pair contributes its aligned windows; preserve texts all L tokens."""
    guides = [g if g else " " for g in guides]  # the old scripts' unconditional guide is ' ' ([BOS, EOS])
    texts = list(dict.fromkeys(edits + guides + preserves))
    seq = concept_embeddings(pipe, texts, "window")[TOKENS]
    idx = _last_token_index(pipe.tokenizer, texts, pipe.tokenizer.model_max_length).tolist()
    row = {t: i for i, t in enumerate(texts)}
    keys, sources = [], []
    for e, g in zip(edits, guides):
        k, s = _window_pair(seq[row[e]], idx[row[e]], seq[row[g]], idx[row[g]])
        keys.append(k)
        sources.append(s)
    preserve = torch.cat([seq[row[p]] for p in preserves]) if preserves else None
    return {TOKENS: _System(torch.cat(keys), torch.cat(sources), preserve)}


def uce_erase(pipe, edit_concepts: str | Sequence[str], guide_concepts: str | Sequence[str] | None = None,
              preserve_concepts: str | Sequence[str] = (), lamb: float = 0.5, erase_scale: float = 1.0,
              preserve_scale: float = 1.0, expand_prompts: bool = False, concept_type: str = "object",
              token_mode: str = "last", max_sequence_length: int | None = None,
              residuals: dict | None = None) -> Delta:
    """UCE erase / moderate (`uce_sd_erase.py`): map each edit concept onto its guide, keep preserve concepts.

    Targets v_i* = W_old c_guide(i); preserve targets W_old c_j; closed form of `solve_uce`.
    Guide default: 'art' for `concept_type='art'`, else '' (moderation = erase towards '' with no
    preserve set). Concept lists may be `;`-separated strings. A preserve concept may be '' (the
    unconditional embedding). `max_sequence_length` is FLUX's T5 length (see `concept_embeddings`).
    `residuals`: see `_solve_modules` (how close the edited keys' outputs came to their targets).

    Returns the delta `{"unet"|"transformer": {module + ".weight": W_new}}`; `pipe` is not modified.
    """
    if concept_type not in EXPAND_TEMPLATES:
        raise ValueError(f"concept_type must be one of {sorted(EXPAND_TEMPLATES)}, got {concept_type!r}")
    if token_mode not in ("last", "window"):
        raise ValueError(f"token_mode must be 'last' or 'window', got {token_mode!r}")
    edits = split_concepts(edit_concepts)
    require_nonempty(edits, "edit_concepts")
    guides = _resolve_guides(edits, guide_concepts, concept_type)
    preserves = split_concepts(preserve_concepts)
    if expand_prompts:
        edits, guides = _expand(edits, guides, concept_type)
    check_concepts_fit(pipe, edits + guides + preserves, max_sequence_length)
    if token_mode == "window":
        if model_family(pipe) == "flux":
            raise ValueError("token_mode='window' is for SD1.x/SDXL UNets; FLUX supports only 'last'")
        systems = _erase_systems_window(pipe, edits, guides, preserves)
    else:
        systems = _erase_systems_last(pipe, edits, guides, preserves, max_sequence_length)
    return _solve_modules(pipe, systems, lamb, erase_scale, preserve_scale, residuals)


# ----------------------------------------------------------------------------------------- debias
Generate = Callable[[object, str], Sequence]  # (pipe with the current weights, concept) -> images
Classify = Callable[[Sequence], Sequence[str]]  # images -> one attribute label per image


def pipeline_generator(num_images_per_prompt: int = 10, num_inference_steps: int = 20,
                       guidance_scale: float = 7.5, **call_kwargs) -> Generate:
    """The upstream sampler as a `generate` callable: images of the bare concept (unseeded, as upstream)."""

    def generate(pipe, concept: str):
        return pipe(concept, num_images_per_prompt=num_images_per_prompt, num_inference_steps=num_inference_steps,
                    guidance_scale=guidance_scale, **call_kwargs).images

    return generate


def attribute_ratios(labels: Sequence[str], attributes: Sequence[str]) -> list[float]:
    """Fraction of images classified as each attribute (labels outside `attributes` count for none)."""
    if not len(labels):
        raise ValueError("the classifier returned no labels: generate must produce at least one image")
    return [sum(1 for lab in labels if lab == a) / len(labels) for a in attributes]


def _ratio_gap(ratios: Sequence[float], desired: Sequence[float], max_diff: float) -> tuple[list[float], bool]:
    """d_j = r*_j − frac_j; converged if max d < max_diff and |min d| < max_diff, and then d = 0 (§1.6)."""
    d = [r_star - r for r_star, r in zip(desired, ratios)]
    converged = max(d) < max_diff and abs(min(d)) < max_diff
    return ([0.0] * len(d) if converged else d), converged


def _debias_systems(embs: Sequence[dict[str, torch.Tensor]], n_concepts: int, alpha: torch.Tensor,
                    preserve: dict[str, torch.Tensor] | None) -> dict[str, _System]:
    """Per space: one template's rows [concepts, attributes] per entry of `embs`, each concept's
    source c_e + Σ_j A_ej a_j (so v*_e = W0(c_e + Σ_j A_ej a_j)); the templates' rows stacked."""
    systems = {}
    for space in embs[0]:
        keys = [e[space][:n_concepts] for e in embs]
        sources = [c + alpha.to(c) @ e[space][n_concepts:] for c, e in zip(keys, embs)]
        systems[space] = _System(torch.cat(keys), torch.cat(sources), preserve[space] if preserve else None)
    return systems


def _debias_windows(pipe, concepts: list[str], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Old (window) semantics for debias: per concept, its window of tokens (last concept sub-word,
    EOS, pads) and the aligned windows of every attribute text, all of one length L − F with
    F = max over the concept and the attribute texts of the last sub-word index (§1.4 Old).
    Returns (keys n_c×n×d, attribute windows n_c×n_a×n×d)."""
    seqs = concept_embeddings(pipe, concepts + texts, "window")[TOKENS]
    idx = _last_token_index(pipe.tokenizer, concepts + texts, pipe.tokenizer.model_max_length).tolist()
    L, n_c = seqs.shape[1], len(concepts)
    keys, attrs = [], []
    for e in range(n_c):
        F_ = max([idx[e]] + idx[n_c:])
        n = L - F_
        keys.append(seqs[e, idx[e]:idx[e] + n])
        attrs.append(torch.stack([seqs[n_c + j, idx[n_c + j]:idx[n_c + j] + n] for j in range(len(texts))]))
    width = min(k.shape[0] for k in keys)  # one width for every concept (F is shared when texts are)
    return torch.stack([k[:width] for k in keys]), torch.stack([a[:, :width] for a in attrs])


def _debias_window_systems(windows: Sequence[tuple[torch.Tensor, torch.Tensor]], alpha: torch.Tensor,
                           preserve: torch.Tensor | None) -> dict[str, _System]:
    """Every window token t of concept e (per template: `windows` holds one (keys, attribute
    windows) pair of `_debias_windows` each) is edited: source c_et + Σ_j A_ej a_jt."""
    keys, sources = [], []
    for k, a in windows:
        keys.append(k.flatten(0, 1))
        sources.append((k + torch.einsum("ej,ejtd->etd", alpha.to(k), a)).flatten(0, 1))
    return {TOKENS: _System(torch.cat(keys), torch.cat(sources), preserve)}


def _check_templates(templates: str | Sequence[str]) -> list[str]:
    templates = [templates] if isinstance(templates, str) else list(templates)
    require_nonempty(templates, "edit_templates")
    for t in templates:
        if t.count("{}") != 1 or t.replace("{}", "").count("{") or t.replace("{}", "").count("}"):
            raise ValueError(f"edit_templates: {t!r} must hold exactly one '{{}}' (where the concept goes)")
    return templates


def _debias_validate(concepts, attributes, desired_ratios, max_iterations) -> None:
    require_nonempty(concepts, "concepts")
    require_nonempty(attributes, "attributes")
    if len(desired_ratios) != len(attributes):
        raise ValueError(f"{len(attributes)} attributes {list(attributes)} but {len(desired_ratios)} desired ratios")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, got {max_iterations}")


def uce_debias(pipe, concepts: str | Sequence[str], attributes: str | Sequence[str] = ("male", "female"),
               desired_ratios: Sequence[float] = (0.5, 0.5), *, classify: Classify, generate: Generate,
               max_iterations: int = 30, max_diff: float = 0.05, lamb: float = 0.5, edit_scale: float = 1.0,
               preserve_scale: float = 1.0, preserve_concepts: str | Sequence[str] = (),
               max_sequence_length: int | None = None, progress: bool = True,
               gain: float = 1.0, attribute_texts: str | Sequence[str] | None = None,
               token_mode: str = "last", edit_templates: Sequence[str] = ("{}",),
               gain_halving: bool = False, reselect_top: int = 0,
               reselect_rounds: int = 2, keep: str = "best") -> tuple[Delta, list[dict]]:
    """UCE debias, the new iterative procedure (`uce_sd_debias.py`), an integral controller.

    `gain` scales each update, A += gain·d. UCE's code uses 1; a steep model (the toy) overshoots
    and oscillates with it, so the toy config damps it. `gain_halving` (our extension, off by
    default) halves a concept's gain each time its gap changes sign: an overshoot means the
    response is steeper than the step, and the halved steps then bracket the target like a
    bisection instead of swinging around it. The weights returned are those of the
    best *measured* iteration (smallest mean over concepts of the largest attribute gap; for two
    attributes that is half the mean δ), never an unmeasured last solve: the log entry of that
    iteration has `selected: True`. (A worst-case criterion kept the unedited model whenever one
    concept could not move at all, however much the others improved.) `keep="last"` returns what
    UCE's script saves instead: the weights after the last update (converged, or the update after
    the last measurement, never measured itself: its log entry's `selected` is then the last
    measured iteration, with `kept_update_after: True`).

    `reselect_top` (our extension, off by default) fights the winner's curse of that choice: a
    measurement of `generate`'s few images per concept is noisy, so the smallest of many measured
    gaps is mostly luck. The `reselect_top` best measured iterations are measured again,
    `reselect_rounds` more times each on fresh images, and the one with the smallest gap over all
    its measurements pooled is kept (its log entry gets `reselect_ratios`, `reselect_gap`).

    `attributes` are the classifier's labels; `attribute_texts` (default: the same words) are the
    texts whose embeddings serve as the a_j, one per attribute. Old UCE embedded phrases ("image of
    female"); a model whose captions only ever use a word inside a phrase (the toy says "a woman",
    never a bare "female") needs such phrases for a meaningful direction.

    `token_mode="window"` (SD1.x/SDXL) uses the paper-era multi-token semantics: every token of
    the concept's window (its last sub-word, EOS and the pads) is an edited key, its source the
    same token plus Σ_j A_ej times the aligned token of attribute text j; preserve texts use all
    tokens. The pads carry the whole prompt through a causal encoder, so a model that reads its
    subject from them (the toy) moves only in this mode.

    Iteration t: load the current weights; for each concept e, `images = generate(pipe, e)`,
    `labels = classify(images)`, frac_j = share of label a_j; d_j = r*_j − frac_j (0 once within
    `max_diff`); stop when every concept has converged; else A_e += d_e and re-solve from W0 with
    targets v*_e = W0(c_e + Σ_j A_ej a_j) (a_j = embedding of attribute j) and preserve targets W0 c_p.

    `edit_templates` (old UCE's `image of {p}`, `photo of {p}`, ..., `{p}`): every template gives
    each concept one more edited key, `template.format(concept)`, whose source adds the same A_e
    times the equally templated attribute text. A causal encoder reads "a photo of a ceo" through
    its context, so keys of the bare concept alone do not move the templated prompts.

    `generate(pipe, concept)` sees `pipe` holding the current weights (loaded temporarily; the
    pipeline is restored on return); plug a toy oracle or CLIP in via `generate`/`classify`.
    Returns `(delta, log)`: the best measured weights (`{}` if the unedited model measured best) and one
    dict per iteration with each concept's `ratios`, `diffs`, `converged`, the `alpha` measured and the
    `gain` of the step that led to it.
    """
    concepts, attributes = split_concepts(concepts), split_concepts(attributes)
    texts = split_concepts(attribute_texts) if attribute_texts is not None else attributes
    if len(texts) != len(attributes):
        raise ValueError(f"attribute_texts {texts} must give one text per attribute {attributes}")
    preserves = split_concepts(preserve_concepts)
    _debias_validate(concepts, attributes, desired_ratios, max_iterations)
    if keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got {keep!r}")
    for name, value in (("reselect_top", reselect_top), ("reselect_rounds", reselect_rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if token_mode not in ("last", "window"):
        raise ValueError(f"token_mode must be 'last' or 'window', got {token_mode!r}")
    if token_mode == "window" and model_family(pipe) == "flux":
        raise ValueError("token_mode='window' is for SD1.x/SDXL UNets; FLUX supports only 'last'")
    templates = _check_templates(edit_templates)
    check_concepts_fit(pipe, [t.format(x) for t in templates for x in concepts + texts] + preserves,
                       max_sequence_length)
    if token_mode == "window":
        windows = [_debias_windows(pipe, [t.format(c) for c in concepts], [t.format(x) for x in texts])
                   for t in templates]
        win_preserve = concept_embeddings(pipe, preserves, "window")[TOKENS].flatten(0, 1) if preserves else None
    else:
        embs = [concept_embeddings(pipe, [t.format(x) for x in concepts + texts], "last", max_sequence_length)
                for t in templates]
        emb_preserve = concept_embeddings(pipe, preserves, "last", max_sequence_length) if preserves else None

    alpha = torch.zeros(len(concepts), len(attributes))
    gains = torch.full((len(concepts), 1), float(gain))
    last_gap = torch.zeros(len(concepts), len(attributes))  # gain_halving: each concept's last non-zero gap
    delta: Delta = {}
    log: list[dict] = []
    measured: list[tuple[float, int, Delta, list[list[float]]]] = []  # (mean gap, iteration, weights, ratios)
    for t in tqdm(range(max_iterations), desc="UCE debias", disable=not progress):
        with delta_applied(pipe, delta):
            ratios = [attribute_ratios(classify(generate(pipe, c)), attributes) for c in concepts]
        gaps = [_ratio_gap(r, desired_ratios, max_diff) for r in ratios]
        log.append(_log_entry(t, concepts, attributes, ratios, gaps, alpha, gains))
        measured.append((_mean_gap(ratios, desired_ratios), t, delta, ratios))
        measured.sort(key=lambda m: m[:2])  # smallest gap first, earliest iteration on ties
        del measured[max(reselect_top, 1):]  # keep only the candidates' weights (an SD delta is tens of MB)
        if all(done for _, done in gaps):
            break
        diffs = torch.tensor([d for d, _ in gaps])
        if gain_halving:  # a gap pointing against the concept's last non-zero gap: it overshot
            gains = torch.where((diffs * last_gap).sum(1, keepdim=True) < 0, gains / 2, gains)
            last_gap = torch.where(diffs.abs().sum(1, keepdim=True) > 0, diffs, last_gap)
        alpha += gains * diffs  # A(t) = Σ_{s≤t} gain(s) · d(s); gain(s) is constant unless gain_halving
        if token_mode == "window":
            systems = _debias_window_systems(windows, alpha, win_preserve)
        else:
            systems = _debias_systems(embs, len(concepts), alpha, emb_preserve)
        delta = _solve_modules(pipe, systems, lamb, edit_scale, preserve_scale)
    if keep == "last":  # UCE's script: the weights of the last update, measured or not
        log[-1]["selected"] = True
        log[-1]["kept_update_after"] = not all(log[-1]["converged"].values())
        return delta, log
    best = measured[0]
    if reselect_top and len(measured) > 1 and best[0] > 0:
        best = _reselect(pipe, measured, concepts, attributes, desired_ratios, classify, generate,  # the top k
                         reselect_rounds, log)
    log[best[1]]["selected"] = True
    return best[2], log


def largest_gaps(ratios: Sequence[Sequence[float]], desired: Sequence[float]) -> list[float]:
    """Each concept's largest attribute gap |r*_j − r_j| (UCE's convergence: all below max_diff)."""
    return [max(abs(r_star - x) for r_star, x in zip(desired, r)) for r in ratios]


def _mean_gap(ratios: Sequence[Sequence[float]], desired: Sequence[float]) -> float:
    """Mean over concepts of the largest attribute gap: for two attributes, half the mean δ."""
    gaps = largest_gaps(ratios, desired)
    return sum(gaps) / len(gaps)


def _reselect(pipe, candidates, concepts, attributes, desired, classify, generate, rounds, log):
    """The candidate with the smallest gap over its loop measurement and `rounds` fresh ones, pooled."""
    best = None
    for _, t, delta, ratios in candidates:
        pooled = [list(r) for r in ratios]
        with delta_applied(pipe, delta):
            for _ in range(rounds):
                for i, c in enumerate(concepts):
                    fresh = attribute_ratios(classify(generate(pipe, c)), attributes)
                    pooled[i] = [a + b for a, b in zip(pooled[i], fresh)]
        pooled = [[x / (rounds + 1) for x in r] for r in pooled]
        gap = _mean_gap(pooled, desired)
        log[t]["reselect_ratios"] = {c: dict(zip(attributes, r)) for c, r in zip(concepts, pooled)}
        log[t]["reselect_gap"] = gap
        if best is None or (gap, t) < best[:2]:
            best = (gap, t, delta, pooled)
    return best


def _log_entry(t, concepts, attributes, ratios, gaps, alpha, gains) -> dict:
    return {
        "iteration": t,
        "ratios": {c: dict(zip(attributes, r)) for c, r in zip(concepts, ratios)},
        "diffs": {c: dict(zip(attributes, d)) for c, (d, _) in zip(concepts, gaps)},
        "converged": {c: done for c, (_, done) in zip(concepts, gaps)},
        "alpha": {c: dict(zip(attributes, a.tolist())) for c, a in zip(concepts, alpha)},
        "gain": {c: g.item() for c, g in zip(concepts, gains)},
    }
