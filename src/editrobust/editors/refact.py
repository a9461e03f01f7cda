"""ReFACT (Arad, Orgad, Belinkov; NAACL 2024): a rank-one edit of one text-encoder MLP.

Reference: the authors' code, technion-cs-nlp/ReFACT (HEAD 8b6df79: `src/refact/refact_main.py`,
`compute_u.py`, `compute_v.py`, `layer_stats.py`), a ROME adaptation to CLIP's text encoder. The edited
matrix is `text_model.encoder.layers.{L}.mlp.fc2` (W_out, d×4d); its bias is untouched. (In
transformers 5 a CLIPTextModel's state-dict key is `encoder.layers.{L}.mlp.fc2.weight`, without
`text_model.`; `fc2_key` gives the right one for each encoder.)

1. key:    k = fc2 input at the lookup token; k̄ = mean over the 9 templates; u = C⁻¹k̄
           (C = uncentred second moment of fc2 inputs over generic text, `second_moment`).
2. value:  δ added to the layer's MLP output at the lookup token of every prompt; Adam on
           L = −mean_p log softmax_k(−‖f_δ(p) − g_k‖₂)[new] + wd·‖δ‖₂/‖m0‖₂²,  k ∈ {new, old},
           f = the edited encoder's text feature, g_k = the clean encoder's feature of the new/old
           text; stop when mean_p p(new) > threshold; ‖δ‖ ≤ clamp·‖m0‖; v* = m0 + δ.
3. update: W_out' = W_out + (v* − m*)(C⁻¹k̄)ᵀ / ((C⁻¹k̄)ᵀk*), with k*, m* (fc2 input/output) at the
           bare prompt, so that W_out'k* + b = v*.

Text feature (our choice, same for f and g): the projected `text_embeds` if the encoder has a
text projection (CLIPTextModelWithProjection, SDXL's `text_encoder_2`), else `pooler_output`
(SD1.x's CLIPTextModel: the EOS state after the final LayerNorm). The official code scores with
CLIP's projected features; SD1.x's pipeline has no projection, and the pooled state is what the
projection would read.

Lookup token (`position`): "subject_last" (default, the paper's `subject_last`: the subject's last
sub-word) or "eos" (the end token of each prompt). On tiny random encoders a change at the
subject token reaches the pooled EOS feature only weakly through a few attention layers, so the
tests use "eos"; real CLIP encoders use "subject_last".

"tail" is our departure from ReFACT, for denoisers that read the padding. The toy UNet draws
what the states *after* the end token say (swapping only those pads of "a lime" for those of
"a lemon" draws a lemon; swapping the subject or end token changes nothing), so an edit written
at one token and scored by the pooled feature cannot reach what is drawn. With "tail":
- prompts are tokenised as the diffusers pipelines do (padded to `model_max_length`, no
  attention mask), so the pads carry the states the denoiser reads;
- the lookup is the end token and every pad after it: k (and m) is their mean fc2 input
  (output), and δ is added at all of them;
- the text feature f (and g_new, g_old) is the mean final hidden state over that tail.
The loss, hyperparameters and rank-one update are ReFACT's; C is the same statistic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from editrobust.editors.common import check_token_length, eval_mode
from editrobust.models.components import Delta, model_family, new_tensor
from editrobust.editors.prompts import REFACT_POSITIONS, REFACT_TEMPLATES

TEMPLATES, POSITIONS = REFACT_TEMPLATES, REFACT_POSITIONS


# ---------------------------------------------------------------------------------- model access
# transformers 5's CLIPTextModel holds `encoder` directly (keys `encoder.layers.{L}...`), while
# CLIPTextModelWithProjection (and transformers 4's CLIPTextModel) nest it in `text_model`.
_LAYER_LISTS = ("text_model.encoder.layers", "encoder.layers")


def _layers_path(text_encoder) -> str:
    for path in _LAYER_LISTS:
        try:
            text_encoder.get_submodule(path)
            return path
        except AttributeError:
            continue
    raise ValueError(f"{type(text_encoder).__name__} has none of {_LAYER_LISTS}: not a CLIP text encoder")


def _layers(text_encoder) -> torch.nn.ModuleList:
    return text_encoder.get_submodule(_layers_path(text_encoder))


def num_layers(text_encoder) -> int:
    return len(_layers(text_encoder))


def fc2_key(text_encoder, layer: int) -> str:
    """State-dict name of the edited weight, e.g. `text_model.encoder.layers.7.mlp.fc2.weight`."""
    return f"{_layers_path(text_encoder)}.{layer}.mlp.fc2.weight"


def check_layer(text_encoder, layer: int) -> None:
    n = num_layers(text_encoder)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < n:
        raise ValueError(f"layer {layer!r} is out of range: the text encoder has {n} layers (0..{n - 1})")


def _fc2(text_encoder, layer: int) -> torch.nn.Linear:
    return _layers(text_encoder)[layer].mlp.fc2


def edited_weight(text_encoder, layer: int) -> torch.Tensor:
    return _fc2(text_encoder, layer).weight


def edited_encoders(pipe) -> list:
    """The text encoders `refact_edit_pipeline` edits: `text_encoder`, and SDXL's `text_encoder_2`."""
    second = getattr(pipe, "text_encoder_2", None)
    return [pipe.text_encoder] + ([second] if second is not None and model_family(pipe) == "sdxl" else [])


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def text_features(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  tail: torch.Tensor | None = None) -> torch.Tensor:
    """Projected `text_embeds` if the encoder has a text projection, else `pooler_output` (module docstring).

    With a `tail` mask (batch×tokens×1, `position="tail"`): the mean final hidden state over it.
    """
    out = text_encoder(input_ids=input_ids, attention_mask=attention_mask)
    if tail is not None:
        return _masked_mean(out.last_hidden_state.float(), tail)
    embeds = getattr(out, "text_embeds", None)
    return (embeds if embeds is not None else out.pooler_output).float()


def _tokenize(tokenizer, texts: Sequence[str], device, pipeline_style: bool = False, **kw) -> dict[str, torch.Tensor]:
    if pipeline_style:  # as the diffusers pipelines encode prompts: padded to full length, no attention mask
        enc = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(device)}
    enc = tokenizer(list(texts), padding=True, return_tensors="pt", **kw)
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}


def _masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `states` (batch×tokens×d) over the tokens marked in `mask` (batch×tokens×1)."""
    mask = mask.to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1)


# ----------------------------------------------------------------------------------------- C
@torch.no_grad()
def second_moment(text_encoder, tokenizer, layer: int, texts: Sequence[str], max_length: int | None = None,
                  batch_size: int = 64, progress: bool = True) -> torch.Tensor:
    """C = (1/N) Σ k kᵀ over every non-pad token's fc2 input (BOS and EOS included), uncentred, fp32 (§2.2).

    Texts longer than `max_length` tokens (default: the tokenizer's) are truncated; set it
    explicitly for parity (the paper's statistics were effectively truncated at 60 tokens).
    """
    check_layer(text_encoder, layer)
    texts = list(texts)
    if not texts:
        raise ValueError("second_moment needs at least one text")
    fc2, device = _fc2(text_encoder, layer), _device(text_encoder)
    total = torch.zeros(fc2.in_features, fc2.in_features, dtype=torch.float64, device=device)
    n_tokens = 0
    batches = range(0, len(texts), batch_size)
    with eval_mode(text_encoder), _capture_input(fc2) as captured:
        for start in tqdm(batches, desc=f"second moment, layer {layer}", disable=not progress):
            enc = _tokenize(tokenizer, texts[start:start + batch_size], device, truncation=True,
                            max_length=max_length or tokenizer.model_max_length)
            text_encoder(**enc)
            k = captured["input"][enc["attention_mask"].bool()].float()  # (tokens, d_in), pads dropped
            total += (k.T @ k).double()  # fp64 running sum: N reaches millions of tokens
            n_tokens += k.shape[0]
    return (total / n_tokens).float()


@contextmanager
def _capture_input(module: torch.nn.Module) -> Iterator[dict]:
    captured: dict = {}
    handle = module.register_forward_hook(lambda mod, args, out: captured.__setitem__("input", args[0]))
    try:
        yield captured
    finally:
        handle.remove()


# -------------------------------------------------------------------------------- lookup tokens
def subject_last_index(tokenizer, template: str, subject: str) -> int:
    """Index of the subject's last sub-word in `template.format(subject)` (BOS at 0): len(prefix) + len(subject).

    As ReFACT's `get_words_idxs_in_templates`: the prefix loses its trailing space, the subject gains a
    leading one, and both are tokenized without special tokens.
    """
    prefix = template[: template.index("{}")].rstrip(" ")
    subject_text = f" {subject.strip()}" if prefix else subject

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    return n_tokens(prefix) + n_tokens(subject_text)


def eos_index(tokenizer, text: str) -> int:
    """Index of the end token of `text` (its last token with special tokens)."""
    return len(tokenizer(text)["input_ids"]) - 1


def lookup_index(tokenizer, template: str, subject: str, position: str) -> int:
    """The one lookup token of "subject_last" or "eos" (see `lookup_positions` for all three)."""
    if position == "subject_last":
        return subject_last_index(tokenizer, template, subject)
    return eos_index(tokenizer, template.format(subject))


def lookup_positions(tokenizer, template: str, subject: str, position: str) -> list[int]:
    """The lookup tokens of `template.format(subject)`: one token, or for "tail" the end token and every pad."""
    if position == "tail":
        return list(range(eos_index(tokenizer, template.format(subject)), tokenizer.model_max_length))
    return [lookup_index(tokenizer, template, subject, position)]


def _token_mask(positions: Sequence[int | Sequence[int]], seq_len: int, device) -> torch.Tensor:
    """batch×tokens×1 with 1 at each prompt's lookup token(s)."""
    mask = torch.zeros(len(positions), seq_len, 1, device=device)
    for row, pos in enumerate(positions):
        mask[row, [pos] if isinstance(pos, int) else list(pos)] = 1.0
    return mask


@torch.no_grad()
def fc2_io(text_encoder, tokenizer, layer: int, texts: Sequence[str], positions: Sequence[int | Sequence[int]],
           pipeline_style: bool = False):
    """(fc2 input, fc2 output incl. bias) at `positions[i]` of `texts[i]`, as fp32 n×d_in, n×d_out.

    A position may be a list of tokens (the "tail" lookup): the result is their mean.
    """
    fc2, device = _fc2(text_encoder, layer), _device(text_encoder)
    store: dict = {}
    handle = fc2.register_forward_hook(lambda mod, args, out: store.update(input=args[0], output=out))
    enc = _tokenize(tokenizer, texts, device, pipeline_style)
    try:
        with eval_mode(text_encoder):
            text_encoder(**enc)
    finally:
        handle.remove()
    mask = _token_mask(positions, enc["input_ids"].shape[1], device)
    return _masked_mean(store["input"].float(), mask), _masked_mean(store["output"].float(), mask)


# ------------------------------------------------------------------------------------- step 1: u
def left_vector(C: torch.Tensor, k_bar: torch.Tensor) -> torch.Tensor:
    """C⁻¹k̄ (unnormalised: ReFACT normalises it, and the normalisation cancels in the update)."""
    try:
        return torch.linalg.solve(C.double().to(k_bar.device), k_bar.double()).float()
    except torch.linalg.LinAlgError as err:
        raise ValueError("the second moment C is singular: collect it over more (and more varied) text") from err


# ------------------------------------------------------------------------------------- step 2: v
@contextmanager
def _add_at_tokens(module: torch.nn.Module, delta: torch.Tensor, mask: torch.Tensor) -> Iterator[None]:
    """Add `delta` to `module`'s output at the tokens marked in `mask` (batch×tokens×1)."""

    def hook(mod, args, out):
        return out + mask.to(out.dtype) * delta.to(out.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def optimize_value(text_encoder, tokenizer, layer: int, prompts: Sequence[str],
                   positions: Sequence[int | Sequence[int]], g: torch.Tensor, m0: torch.Tensor, lr: float,
                   max_steps: int, prob_threshold: float, weight_decay: float, clamp_norm_factor: float,
                   tail: bool = False) -> tuple[torch.Tensor, dict]:
    """δ minimising L = −mean_p log softmax_k(−‖f_δ(p) − g_k‖₂)[new] + wd·‖δ‖/‖m0‖² (§2.2 step 2).

    `g` holds the clean features of [new, old] (2×d). Stops when mean_p p(new) > `prob_threshold`
    or after `max_steps` evaluations; δ is clamped to ‖δ‖ ≤ clamp·‖m0‖ after each Adam step.
    Gradients go to δ only (`autograd.grad`), so the encoder's `.grad` fields stay untouched.
    `tail`: pipeline-style prompts, and f is the mean final state over the lookup tokens.
    """
    device = _device(text_encoder)
    enc = _tokenize(tokenizer, prompts, device, pipeline_style=tail)
    mask = _token_mask(positions, enc["input_ids"].shape[1], device)
    delta = torch.zeros_like(m0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    mlp = _layers(text_encoder)[layer].mlp
    max_norm = clamp_norm_factor * m0.norm()
    steps, prob, initial = 0, 0.0, None
    for it in range(max_steps):
        with _add_at_tokens(mlp, delta, mask):
            f = text_features(text_encoder, **enc, tail=mask if tail else None)
        log_p_new = torch.log_softmax(-torch.cdist(f, g), dim=1)[:, 0]
        loss = -log_p_new.mean() + weight_decay * delta.norm() / m0.norm() ** 2
        prob = log_p_new.exp().mean().item()
        initial = prob if initial is None else initial
        if prob > prob_threshold or it == max_steps - 1:
            break
        (delta.grad,) = torch.autograd.grad(loss, [delta])
        opt.step()
        steps += 1
        with torch.no_grad():
            if delta.norm() > max_norm:  # project back into the L2 ball
                delta.mul_(max_norm / delta.norm())
    return delta.detach(), {"steps": steps, "initial_prob": initial, "final_prob": prob, "final_loss": loss.item()}


# ---------------------------------------------------------------------------------------- edit
def check_reachable(text_encoder, layer: int, position: str) -> None:
    """ValueError, before any optimisation, when the update cannot reach the text feature ReFACT
    optimises: the feature is read at the end token (or the tail, with `tail`), and a write at the
    subject token in the encoder's last layer has no later attention layer to carry it there
    (the update would stay zero however long δ is optimised)."""
    n = num_layers(text_encoder)
    if position == "subject_last" and layer == n - 1:
        raise ValueError(f"layer {layer} is the text encoder's last (of {n}): a write at the subject token there "
                         "cannot reach the end token, where the text feature ReFACT optimises is read, so the edit "
                         f"would change nothing. Use a layer below {layer}, or position eos or tail")


def _validate(text_encoder, tokenizer, prompt, old, new, layer, templates, position) -> None:
    check_layer(text_encoder, layer)
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")
    check_reachable(text_encoder, layer, position)
    for name, text in (("prompt", prompt), ("old", old), ("new", new)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"ReFACT needs a non-empty {name} text, got {text!r}")
    if not templates:
        raise ValueError("ReFACT needs at least one template")
    bad = [t for t in templates if t.count("{}") != 1]
    if bad:
        raise ValueError(f"each template needs exactly one '{{}}' for the subject: {bad}")
    check_token_length(tokenizer, [t.format(prompt) for t in templates] + [prompt, old, new], what="ReFACT prompt")


def refact_edit(text_encoder, tokenizer, prompt: str, old: str, new: str, layer: int, C: torch.Tensor,
                templates: Sequence[str] = TEMPLATES, position: str = "subject_last", v_lr: float = 0.05,
                v_max_grad_steps: int = 100, v_prob_threshold: float = 0.99, v_weight_decay: float = 0.1,
                clamp_norm_factor: float = 4.0, seed: int = 0, target_encoder=None,
                target_features: torch.Tensor | None = None) -> tuple[Delta, dict]:
    """ReFACT rank-one edit of `text_model.encoder.layers.{layer}.mlp.fc2` (ReFACT's `compute_u`/`compute_v`).

    `prompt` is the subject (the bare prompt "{}" formatted with it), `old`/`new` the texts whose
    clean features g_old/g_new the loss contrasts (e.g. prompt "the president of the united
    states", old "joe biden", new "donald trump"); `C` = `second_moment(...)` of the same layer.
    `target_encoder` gives g_k (default: `text_encoder` itself, run without the δ hook, i.e. a frozen
    copy of the clean encoder; pass the original model for sequential edits), or `target_features`
    gives them directly (2×d, [new, old]: `clean_features` of the original encoder; what
    `refact_edit_sequence` passes, so that no copy of the encoder is needed).

    Returns `({"text_encoder": {fc2 weight key: W_new}}, info)`; the encoder is not modified.
    `info` has the optimisation record, norms, and `info["vectors"]` (k*, m*, v*, u = C⁻¹k̄ tensors;
    drop it before writing JSON).
    """
    _validate(text_encoder, tokenizer, prompt, old, new, layer, templates, position)
    # The bare prompt first: m0 is measured on it, so m0 = m* (ReFACT's set() made this order random).
    prompts = ["{}"] + [t for t in dict.fromkeys(templates) if t != "{}"]
    pos = {t: lookup_positions(tokenizer, t, prompt, position) for t in prompts}
    tail = position == "tail"
    device = _device(text_encoder)

    with torch.random.fork_rng(devices=[]), eval_mode(text_encoder):
        torch.manual_seed(seed)  # the procedure is deterministic; this pins anything stochastic downstream
        # step 1: key direction from the templates (bare prompt excluded)
        k_tpl, _ = fc2_io(text_encoder, tokenizer, layer, [t.format(prompt) for t in templates],
                          [pos[t] for t in templates], pipeline_style=tail)
        u = left_vector(C, k_tpl.mean(0))
        # k*, m* at the bare prompt
        k_star, m_star = (x[0] for x in fc2_io(text_encoder, tokenizer, layer, [prompt], [pos["{}"]],
                                                pipeline_style=tail))
        # step 2: target value
        if target_features is not None:
            g = target_features.to(device)
        else:
            g = _clean_features(target_encoder or text_encoder, tokenizer, [new, old], device, tail=tail)
        delta, record = optimize_value(text_encoder, tokenizer, layer, [t.format(prompt) for t in prompts],
                                       [pos[t] for t in prompts], g, m_star, v_lr, v_max_grad_steps,
                                       v_prob_threshold, v_weight_decay, clamp_norm_factor, tail=tail)
    v_star = m_star + delta
    # step 3: W_out' = W_out + (v* − m*) uᵀ / (uᵀ k*)
    W_old = _fc2(text_encoder, layer).weight
    update = torch.outer(v_star - m_star, u) / (u @ k_star)
    W_new = W_old.detach().float() + update.to(W_old.device)
    info = {"layer": layer, "position": position, "lookup_index": pos["{}"][0], "lookup_tokens": len(pos["{}"]),
            **record,
            "delta_norm": delta.norm().item(), "m_star_norm": m_star.norm().item(),
            "v_star_norm": v_star.norm().item(), "update_norm": update.norm().item(),
            "vectors": {"k_star": k_star.cpu(), "m_star": m_star.cpu(), "v_star": v_star.cpu(), "u": u.cpu()}}
    return {"text_encoder": {fc2_key(text_encoder, layer): new_tensor(W_new, W_old)}}, info


@torch.no_grad()
def _clean_features(encoder, tokenizer, texts: Sequence[str], device, tail: bool = False) -> torch.Tensor:
    enc = _tokenize(tokenizer, texts, _device(encoder), pipeline_style=tail)
    mask = None
    if tail:
        mask = _token_mask([lookup_positions(tokenizer, "{}", t, "tail") for t in texts], enc["input_ids"].shape[1],
                           _device(encoder))
    with eval_mode(encoder):
        return text_features(encoder, **enc, tail=mask).to(device)


# ------------------------------------------------------------------------------ pipelines (SDXL)
def same_relative_depth(layer: int, n_layers: int, n_layers_2: int) -> int:
    """The layer of a second encoder at the same relative depth: first ↔ first, last ↔ last.

    SD1.4's L = 7 of 12 gives 20 of SDXL bigG's 32. (SDXL's UNet reads `hidden_states[-2]`, so an
    edit of an encoder's last layer reaches only the pooled embedding.)
    """
    if n_layers == 1:
        return 0
    return round(layer * (n_layers_2 - 1) / (n_layers - 1))


def _encoder_jobs(pipe, layer: int, C, layer_2, C_2, texts, max_length) -> list[tuple]:
    """(component, encoder, tokenizer, layer, second moment) of each encoder ReFACT edits."""
    jobs = [("text_encoder", pipe.text_encoder, pipe.tokenizer, layer, C)]
    if len(edited_encoders(pipe)) == 2:
        check_layer(pipe.text_encoder, layer)
        if layer_2 is None:
            layer_2 = same_relative_depth(layer, num_layers(pipe.text_encoder), num_layers(pipe.text_encoder_2))
        jobs.append(("text_encoder_2", pipe.text_encoder_2, pipe.tokenizer_2, layer_2, C_2))
    out = []
    for name, encoder, tokenizer, lay, moment in jobs:
        check_layer(encoder, lay)
        if moment is None:
            if texts is None:
                raise ValueError(f"give the second moment of {name} layer {lay}, or `texts` to compute it from")
            moment = second_moment(encoder, tokenizer, lay, texts, max_length=max_length)
        out.append((name, encoder, tokenizer, lay, moment))
    return out


def refact_edit_pipeline(pipe, prompt: str, old: str, new: str, layer: int, C: torch.Tensor | None = None, *,
                         layer_2: int | None = None, C_2: torch.Tensor | None = None,
                         texts: Sequence[str] | None = None, max_length: int | None = None,
                         **kwargs) -> tuple[Delta, dict]:
    """ReFACT on a pipeline: `text_encoder`, and also `text_encoder_2` when present (SDXL).

    Each encoder gets its own layer and second moment: `layer_2` defaults to `same_relative_depth`;
    a missing `C`/`C_2` is computed from `texts` (`second_moment`, truncated at `max_length`).
    Keyword arguments go to `refact_edit`. Returns the combined delta and `{component: info}`.
    FLUX's CLIP `text_encoder` is edited too (only its pooled output reaches the transformer); its
    T5 encoder is not.
    """
    delta: Delta = {}
    infos: dict = {}
    for name, encoder, tokenizer, lay, moment in _encoder_jobs(pipe, layer, C, layer_2, C_2, texts, max_length):
        d, info = refact_edit(encoder, tokenizer, prompt, old, new, lay, moment, **kwargs)
        delta[name] = d["text_encoder"]
        infos[name] = info
    return delta, infos


def clean_features(text_encoder, tokenizer, old: str, new: str, position: str = "subject_last") -> torch.Tensor:
    """The clean features g of [new, old] (2×d) that `refact_edit`'s loss contrasts."""
    return _clean_features(text_encoder, tokenizer, [new, old], _device(text_encoder), tail=position == "tail")


@torch.no_grad()
def new_text_probability(text_encoder, tokenizer, prompt: str, g: torch.Tensor,
                         templates: Sequence[str] = TEMPLATES, position: str = "subject_last") -> float:
    """ReFACT's p(new) over {new, old} of the encoder as it is (no δ): the mean over the bare prompt and
    the templates of softmax_k(−‖f(p) − g_k‖₂)[new], `g` = `clean_features` (of the unedited encoder).
    The quantity `optimize_value` stops on, measured after the fact (a sequence's later edits may
    undo an earlier one)."""
    prompts = ["{}"] + [t for t in dict.fromkeys(templates) if t != "{}"]
    tail = position == "tail"
    device = _device(text_encoder)
    enc = _tokenize(tokenizer, [t.format(prompt) for t in prompts], device, pipeline_style=tail)
    mask = None
    if tail:
        mask = _token_mask([lookup_positions(tokenizer, t, prompt, position) for t in prompts],
                           enc["input_ids"].shape[1], device)
    with eval_mode(text_encoder):
        f = text_features(text_encoder, **enc, tail=mask)
    return torch.log_softmax(-torch.cdist(f, g.to(f.device)), dim=1)[:, 0].exp().mean().item()


def refact_edit_sequence(pipe, edits: Sequence[tuple[str, str, str]], layer: int, C: torch.Tensor | None = None, *,
                         layer_2: int | None = None, C_2: torch.Tensor | None = None,
                         texts: Sequence[str] | None = None, max_length: int | None = None,
                         **kwargs) -> tuple[Delta, list[dict]]:
    """Several ReFACT edits (prompt, old, new) applied in sequence to one pipeline (a multi-edit model).

    Edit k is computed on the encoder that already carries edits 0..k-1 (its fc2 weight, keys k* and
    values m* are the edited model's), with the same second moment C of the unedited model and the
    clean features g of the unedited encoder, as ReFACT's (and ROME's) sequential editing does.
    Each rank-one update is added to the weight the previous one left, so the result is the
    unedited weight plus a sum of rank-one updates. After the last edit every edit's p(new) is
    measured again on the final encoder (`new_text_probability`): a later edit may undo an earlier one.

    The pipeline is edited in place while the sequence runs and restored before returning (also on
    an error). Returns the final delta (the last weights, as `refact_edit_pipeline`'s) and one
    record per edit: `{component: info}` of its own optimisation, each info with `final_model_prob`.
    """
    if not edits:
        raise ValueError("refact_edit_sequence needs at least one edit")
    jobs = _encoder_jobs(pipe, layer, C, layer_2, C_2, texts, max_length)
    position = kwargs.get("position", "subject_last")
    templates = kwargs.get("templates", TEMPLATES)
    # the clean features of every edit's texts, from the unedited encoders
    g = {name: [clean_features(encoder, tokenizer, old, new, position) for _, old, new in edits]
         for name, encoder, tokenizer, _, _ in jobs}
    originals = {name: edited_weight(encoder, lay).detach().clone() for name, encoder, _, lay, _ in jobs}
    delta: Delta = {}
    records: list[dict] = []
    try:
        for i, (prompt, old, new) in enumerate(edits):
            record = {}
            for name, encoder, tokenizer, lay, moment in jobs:
                d, info = refact_edit(encoder, tokenizer, prompt, old, new, lay, moment, target_features=g[name][i],
                                      **kwargs)
                (key, W_new), = d["text_encoder"].items()
                with torch.no_grad():
                    edited_weight(encoder, lay).copy_(W_new.to(edited_weight(encoder, lay)))
                delta[name] = {key: W_new}
                record[name] = info
            records.append(record)
        for i, (prompt, _, _) in enumerate(edits):
            for name, encoder, tokenizer, _, _ in jobs:
                records[i][name]["final_model_prob"] = new_text_probability(encoder, tokenizer, prompt, g[name][i],
                                                                            templates, position)
    finally:
        with torch.no_grad():
            for name, encoder, _, lay, _ in jobs:
                edited_weight(encoder, lay).copy_(originals[name])
    return delta, records
