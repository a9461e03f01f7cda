"""Prompt templates the editors use: data only, shared by the method declarations (whose defaults
they are) and the algorithms, without importing torch."""

# ReFACT's nine realistic-style templates (Arad et al., NAACL 2024, and its code): the contexts
# whose subject keys are averaged.
REFACT_TEMPLATES = (
    "{} in a realistic style portrait image", "{}, a portrait", "realistic painting of {}", "a current image of {}",
    "{}, news image", "a beautiful photograph of {}", "realistic drawing of {}", "{}, realistic portrait",
    "{} in a photo",
)
# Where ReFACT reads its key: the subject's last sub-word (the paper), the end token, or the end
# token and every pad after it (our `tail`, for denoisers that read the padding; refact.py).
REFACT_POSITIONS = ("subject_last", "eos", "tail")
