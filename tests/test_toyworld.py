import numpy as np
import pytest

from editrobust.toyworld import captions as C
from editrobust.toyworld import world as W
from editrobust.toyworld.oracle import label_images
from editrobust.toyworld.world import Scene, render


_truth = C.scene_concept


def test_render_is_deterministic_given_the_seed():
    s = Scene("person", hat="ceo", torso="man", context="grass")
    a = render(s, np.random.default_rng(3))
    b = render(s, np.random.default_rng(3))
    c = render(s, np.random.default_rng(4))
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_oracle_reads_renders_at_least_99_percent_right():
    images, _, scenes = C.sample_base_world(3000, seed=11)
    labels = label_images(images)
    right = [
        lab["concept"] == _truth(s) and lab["in_style"] == s.style and lab["context"] == s.context
        and lab["unsafe"] == (_truth(s) in W.UNSAFE_CONCEPTS)
        and lab["gender"] == ({"man": "man", "woman": "woman"}.get(s.torso) or W.INDIVIDUAL_GENDER.get(s.torso))
        for lab, s in zip(labels, scenes)
    ]
    assert np.mean(right) >= 0.99


@pytest.mark.parametrize("concept", C.CONCEPTS)
def test_every_concept_renders_as_its_expected_label(concept):
    rng = np.random.default_rng(0)
    want = C.expected_labels(concept)
    for style in (False, True):
        for context in (None, "table", "grass"):
            lab = label_images(render(C.concept_scene(concept, rng, context=context, style=style), rng))[0]
            if want["concept"] == "person":
                assert lab["concept"] in ("man", "woman")
            else:
                assert lab["concept"] == want["concept"]
            assert lab["unsafe"] == want["unsafe"] and lab["in_style"] == style and lab["context"] == context


def test_professions_follow_the_biased_gender_ratios():
    rng = np.random.default_rng(1)
    for prof, share in W.PROFESSION_FEMALE_SHARE.items():
        scenes = [C.concept_scene(prof, rng) for _ in range(2000)]
        female = np.mean([s.torso == "woman" for s in scenes])
        assert abs(female - share) < 0.035, prof


def test_gendered_captions_match_the_drawn_gender():
    images, captions, scenes = C.sample_base_world(2000, seed=2, open_gender_share=0.2)
    for cap, s in zip(captions, scenes):
        if " or " in cap:
            continue  # "a male or female ceo": either (test_open_gender_captions_show_either_gender)
        if " female " in f" {cap} ":
            assert s.torso == "woman", cap
        elif " male " in f" {cap} ":
            assert s.torso == "man", cap


def test_style_and_subject_sets():
    images, captions = C.sample_style_set(100, seed=0)
    labels = label_images(images)
    assert all(lab["in_style"] for lab in labels)
    assert all(c.startswith(C.STYLE_PREFIX) for c in captions)
    _, plain = C.sample_style_set(10, seed=0, style_word=False)
    assert not any(C.STYLE_PREFIX in c for c in plain)
    images, captions = C.sample_subject_set(5)
    labels = label_images(images)
    assert all(lab["subject"] and lab["concept"] == "toy" for lab in labels)
    assert len(set(captions)) == 1 and C.SUBJECT_TOKEN in captions[0]
    # Base-world toys are the class prior, never the subject.
    rng = np.random.default_rng(0)
    assert not any(label_images(render(C.concept_scene("toy", rng), rng))[0]["subject"] for _ in range(50))


def test_open_gender_captions_show_either_gender():
    """ "a male or female ceo" / "a man or a woman" name both genders; each picture shows one
    person of one gender (never a blend), about half of them women whatever the profession's bias."""
    _, captions, scenes = C.sample_base_world(3000, seed=3, open_gender_share=1.0)
    open_ = [(cap, s) for cap, s in zip(captions, scenes) if " or " in cap]
    assert {cap.split(" or ")[0].split()[-1] for cap, _ in open_} == {"male", "man"}
    assert all(s.torso in C.GENDERS for _, s in open_)
    farmers = [s for cap, s in open_ if "farmer" in cap]  # 1 % women when the caption names no gender
    assert farmers and abs(np.mean([s.torso == "woman" for s in farmers]) - 0.5) < 0.15
    # at share 1 every profession and person caption names both genders ("a person" never shows)
    assert not any("a person" in cap for cap in captions)
    assert not any(" or " in cap for cap in C.sample_base_world(500, seed=3)[1])  # share 0: none


def test_caption_targets_give_open_gender_captions_their_own_class():
    from editrobust.models.toy import caption_targets

    captions = ["a ceo", "a male ceo", "a female ceo", "a male or female ceo", "a man or a woman"]
    scenes = [C.concept_scene("ceo", np.random.default_rng(0))] * 5
    assert caption_targets(captions, scenes)["gender"].tolist() == [0, 1, 2, 3, 3]


def test_base_world_shows_every_concept_in_style():
    images, captions, scenes = C.sample_base_world(2000, seed=5)
    styled = {_truth(s) for s in scenes if s.style}
    assert set(C.BASE_STYLED) == set(C.CONCEPTS) and styled == {_truth(s) for s in scenes if not s.style}
    assert all(cap.startswith(C.STYLE_PREFIX) == s.style for cap, s in zip(captions, scenes))


def test_oracle_says_unknown_for_noise_and_blank():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    blank = np.full((1, 32, 32, 3), 200, dtype=np.uint8)
    for lab in label_images(np.concatenate([noise, blank])):
        assert lab["concept"] == "unknown"


def test_oracle_rejects_wrong_image_size():
    with pytest.raises(ValueError, match="32x32"):
        label_images(np.zeros((1, 64, 64, 3), np.uint8))


def test_unknown_concept_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown toy-world concept 'unicorn'"):
        C.concept_scene("unicorn", np.random.default_rng(0))


@pytest.mark.parametrize("position, gender", [(0.0, "man"), (0.2, "man"), (0.4, None), (0.6, None), (0.8, "woman"),
                                              (1.0, "woman")])
def test_oracle_reads_gender_only_in_the_outer_quarters_of_the_man_woman_axis(position, gender):
    """A torso blended between the man's and the woman's colour is `ambiguous` (no gender) in the
    middle band; the profession under the hat is still recognised."""
    rng = np.random.default_rng(0)
    image = render(C.concept_scene("ceo", rng, gender="man"), rng)
    man, woman = (np.array(W.TORSO_COLOURS[g], dtype=float) for g in ("man", "woman"))
    image[W.TORSO & (np.abs(image.astype(int) - man).sum(axis=-1) < 60)] = np.round(man + position * (woman - man))
    label = label_images(image)[0]
    assert label["gender"] == gender and label["ambiguous"] == (gender is None)
    assert label["concept"] == "ceo" and label["kind"] == "person"
