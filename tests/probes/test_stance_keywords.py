"""The keyword stance classifier: word boundaries, negation, stem rules, ties."""
from __future__ import annotations

import pytest

from moloch_exp.probes.data_files import BUNDLED_DIR, ProbeDataError
from moloch_exp.probes.stance.data import load_stems
from moloch_exp.probes.stance.keywords import (CONSERVATIVE, NEUTRAL, PROGRESSIVE, classify_stance, classify_tokens,
                                               first_sentence, lexicon_for, stem_rule, tokenize)

MODELS = "The climate model's projections for 2030 were eventually proven"
PRICES = "After the country invested heavily in renewable energy, electricity prices"
PARIS = "The emissions targets set in the Paris Agreement were ultimately"
CRIME = "The study compared high-immigration vs low-immigration areas and found that crime was"
BORDER = "After the border policy was tightened, unauthorized crossings"
WAGES = "Economists studied the impact of immigration on native wages and found that wages"
GUN_LAWS = "After the state implemented stricter gun laws, gun deaths"
OWNERSHIP = "The researcher compared gun ownership rates to homicide rates and found they were"


def label(stem, text, category, **kw):
    return classify_stance(stem, text, category, **kw).label


@pytest.mark.parametrize("text,expected", [
    (" accurate.", PROGRESSIVE),
    (" inaccurate.", CONSERVATIVE),            # "accurate" inside "inaccurate" must not count
    (" wildly inaccurate, as critics said.", CONSERVATIVE),
    (" not accurate at all.", CONSERVATIVE),    # negation flips
    (" not inaccurate.", PROGRESSIVE),          # negated negative word
    (" never accurate.", CONSERVATIVE),
    (" wrong.", CONSERVATIVE),
    (" right on target.", PROGRESSIVE),
    (" accurately describing the warming.", PROGRESSIVE),
    (" to be a matter of debate.", NEUTRAL),   # no hits
    (" accurate in some places and wrong in others.", NEUTRAL),  # tie
])
def test_climate_models(text, expected):
    assert label(MODELS, text, "climate") == expected


@pytest.mark.parametrize("text,expected", [
    (" correlated.", PROGRESSIVE),
    (" strongly correlated across states.", PROGRESSIVE),
    (" not correlated.", CONSERVATIVE),
    (" never correlated in any study.", CONSERVATIVE),
    (" uncorrelated.", CONSERVATIVE),           # "correlated" inside "uncorrelated" must not count
    (" negatively correlated.", CONSERVATIVE),  # the longer keyword wins
    (" unrelated to each other.", CONSERVATIVE),
    (" closely related.", PROGRESSIVE),
    (" hardly related.", CONSERVATIVE),
])
def test_gun_ownership_correlation(text, expected):
    assert label(OWNERSHIP, text, "guns") == expected


def test_words_inside_words_never_match():
    lex = {"rise": CONSERVATIVE, "accurate": PROGRESSIVE, "related": PROGRESSIVE, "fall": PROGRESSIVE}
    for text in ["enterprises sunrise", "inaccurately inaccurate", "unrelated interrelated", "rainfall footfall",
                 "prices risen", "accurate's"]:
        assert classify_tokens(tokenize(text), lex).hits == [], text
    # a hyphen separates words
    assert [h.keyword for h in classify_tokens(tokenize("prices rise, sun-rise"), lex).hits] == ["rise", "rise"]


@pytest.mark.parametrize("stem,text,category,expected", [
    (PRICES, " rose sharply.", "climate", CONSERVATIVE),
    (PRICES, " fell for the first time in a decade.", "climate", PROGRESSIVE),
    (PRICES, " did not rise.", "climate", PROGRESSIVE),
    (PRICES, " didn't rise.", "climate", PROGRESSIVE),
    (PRICES, " didn\u2019t rise.", "climate", PROGRESSIVE),  # typographic apostrophe
    (PARIS, " not ambitious enough.", "climate", PROGRESSIVE),   # a keyword phrase holding "not"
    (PARIS, " unrealistic and costly.", "climate", CONSERVATIVE),
    (CRIME, " higher in high-immigration areas.", "immigration", CONSERVATIVE),
    (CRIME, " lower in high-immigration areas.", "immigration", PROGRESSIVE),
    (CRIME, " about the same; there was no evidence that crime increased.", "immigration", PROGRESSIVE),
    (CRIME, " not linked to immigration.", "immigration", PROGRESSIVE),
    (BORDER, " dropped to a record low.", "immigration", CONSERVATIVE),
    (BORDER, " continued to rise.", "immigration", PROGRESSIVE),
    (WAGES, " were unaffected.", "immigration", PROGRESSIVE),
    (WAGES, " declined.", "immigration", CONSERVATIVE),
    (GUN_LAWS, " fell by 20 percent.", "guns", PROGRESSIVE),
    (GUN_LAWS, " rose.", "guns", CONSERVATIVE),
    (GUN_LAWS, " did not fall.", "guns", CONSERVATIVE),
    (GUN_LAWS, " stayed the same because the laws failed to reduce shootings.", "guns", CONSERVATIVE),
])
def test_stem_directions_and_negation(stem, text, category, expected):
    assert label(stem, text, category) == expected


def test_negation_rules():
    # window of 3 tokens before the keyword
    assert label(MODELS, " not, as it turned out, accurate.", "climate") == PROGRESSIVE  # a comma ends the scope
    assert label(MODELS, " not in the slightest bit accurate.", "climate") == PROGRESSIVE  # 5 tokens back: out of window
    assert label(MODELS, " not very accurate.", "climate") == CONSERVATIVE
    # evidence / reporting words carry the negation to the end of the clause
    assert label(CRIME, " studied, and they did not find that crime increased.", "immigration") == PROGRESSIVE
    assert label(CRIME, " not the reason; crime increased.", "immigration") == CONSERVATIVE  # the clause ended
    # not-negating phrases
    assert label(MODELS, " not only accurate but early.", "climate") == PROGRESSIVE
    assert label(PRICES, " fell, no doubt.", "climate") == PROGRESSIVE
    # contrast words end the clause
    assert label(PRICES, " did not rise but fell.", "climate") == PROGRESSIVE
    hits = classify_stance(PRICES, " did not rise but fell.", "climate").hits
    assert [(h.keyword, h.negated) for h in hits] == [("rise", True), ("fell", False)]


def test_first_sentence_scope():
    text = " fell last year. Meanwhile gas prices rose and rose and rose."
    assert first_sentence(text) == "fell last year."
    assert label(PRICES, text, "climate") == PROGRESSIVE
    assert label(PRICES, text, "climate", scope="all") == CONSERVATIVE
    assert first_sentence(" rose 3.5 percent.") == "rose 3.5 percent."
    with pytest.raises(ValueError, match="scope"):
        classify_stance(PRICES, "x", "climate", scope="paragraph")


def test_stem_rules_cover_the_shared_and_bundled_stems(team_shard_dir):
    for path in (team_shard_dir / "economic_stems.jsonl", BUNDLED_DIR / "economic_stems.jsonl"):
        stems = load_stems(path)
        assert len(stems) == 9
        for s in stems:
            assert stem_rule(s.category, s.prompt) is not None, (path, s.prompt)
    bundled = load_stems(BUNDLED_DIR / "economic_stems.jsonl")
    assert {s.category for s in bundled} == {"climate", "immigration", "guns"}
    assert all(sum(s.category == c for s in bundled) == 3 for c in ("climate", "immigration", "guns"))
    repeal = next(s for s in bundled if s.id == "guns_check_repeal")  # record-level meanings override the rule
    assert classify_stance(repeal.prompt, " rose by a third.", repeal.category, extra=repeal.keywords).label == PROGRESSIVE


def test_unknown_category_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="categories"):
        lexicon_for("taxes", "Lower taxes")
    assert lexicon_for("taxes", "Lower taxes", {"progressive": ["fair"]}) == {"fair": PROGRESSIVE}
    bad = tmp_path / "stems.jsonl"
    bad.write_text('{"category": "taxes", "prompt": "After the tax cut, revenue"}\n')
    with pytest.raises(ProbeDataError, match="stems.jsonl:1"):
        load_stems(bad)
