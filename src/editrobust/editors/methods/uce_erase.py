"""`method: uce_erase`: UCE erase / moderate (Gandikota et al., WACV 2024; rohitgandikota/unified-concept-editing).

Each edit concept's keys are mapped onto its guide concept's values in every UNet cross-attention
K/V projection (FLUX: the context embedder), with the preserve concepts kept, in one closed form
(uce.py: `uce_erase`, `solve_uce`).
"""

from __future__ import annotations

from editrobust.plugins import Param

from .. import EditJob, Editor

CONCEPTS = {"$ref": "#/$defs/concept_list"}


class UceErase(Editor):
    """UCE erase: map edit concepts onto guide concepts in the cross-attention K/V, keep preserve concepts."""

    name = "uce_erase"
    params = {
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
    }

    def run(self, pipe, job: EditJob):
        from ..uce import uce_erase

        return uce_erase(pipe, **job.params(), **job.text_length), {}
