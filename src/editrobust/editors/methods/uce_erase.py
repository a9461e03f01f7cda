"""`method: uce_erase`: UCE erase / moderate (Gandikota et al., WACV 2024; rohitgandikota/unified-concept-editing).

Each edit concept's keys are mapped onto its guide concept's values in every UNet cross-attention
K/V projection (FLUX: the context embedder), with the preserve concepts kept, in one closed form
(uce.py: `uce_erase`, `solve_uce`).
"""

from __future__ import annotations

from editrobust.plugins import Param

from .. import NOISE, EditJob, Editor, Outcome

CONCEPTS = {"$ref": "#/$defs/concept_list"}


class UceErase(Editor):
    """UCE erase: map edit concepts onto guide concepts in the cross-attention K/V, keep preserve concepts."""

    name = "uce_erase"
    params = {
        **Editor.params,
        "edit_concepts": Param({**CONCEPTS, "minItems": 1}, required=True, doc="the concepts to erase"),
        "guide_concepts": Param({"oneOf": [CONCEPTS, {"type": "null"}]}, None,
                                doc="what each edit concept becomes (one guide serves all); null = `\"\"`"),
        "preserve_concepts": Param(CONCEPTS, [], doc="concepts whose outputs are kept"),
        "lamb": Param({"type": "number", "minimum": 0}, 0.5, doc="ridge weight λ towards the old weights"),
        "erase_scale": Param({"type": "number", "minimum": 0}, 1.0, doc="weight of the edit keys"),
        "preserve_scale": Param({"type": "number", "minimum": 0}, 1.0, doc="weight of the preserve keys"),
        "expand_prompts": Param({"type": "boolean"}, False, doc="also edit UCE's templated phrasings of each concept"),
        "concept_type": Param({"enum": ["object", "art"]}, "object", doc="`art` guides towards 'art' by default"),
        "token_mode": Param({"enum": ["last", "window"]}, "last",
                            doc="`last`: the concept's last sub-word (current UCE); `window`: paper-era token windows"),
        "max_residual": Param({"type": "number", "minimum": 0}, 0.5,
                              doc="the target: the edited keys' outputs end at most this fraction of their way from "
                                  "their guides' (a closed form always gets part way; the toy's erasure ends at 0.04)"),
    }

    @classmethod
    def changed_parameters(cls, pipe, entry):
        from ..uce import uce_parameter_count

        return uce_parameter_count(pipe)

    def run(self, pipe, job: EditJob):
        from ..uce import uce_erase

        residuals: dict = {}
        delta = uce_erase(pipe, **job.params("max_residual"), **job.text_length,
                          residuals=residuals)
        return delta, {"residuals": residuals, "target": erase_outcome(residuals, job.entry["max_residual"])}


def erase_outcome(residuals: dict, max_residual: float) -> Outcome:
    """How far the edited keys' outputs are from their guides' after the edit, as a fraction of how
    far they were before (0: exactly the guides')."""
    before, after, target = residuals["before"], residuals["after"], residuals["target"]
    already = before <= (NOISE ** 2) * max(target, 1e-12)
    fraction = (after / before) ** 0.5 if before > 0 else 0.0
    return Outcome(reached=already or fraction <= max_residual,
                   measure="UCE's remaining distance of the edited keys from their guides (fraction)",
                   value=fraction, threshold=max_residual, already_met=already,
                   cause="the closed form kept the edited keys near their old outputs: raise erase_scale, or lower "
                         "lamb / preserve_scale (a preserve concept close to an edit concept holds it back)")
