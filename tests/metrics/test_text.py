import math

import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics

# NLTK's corpus_bleu doctest (Papineni et al.'s example): 0.5920...
HYPOTHESIS_1 = ("It is a guide to action which ensures that the military always obeys the commands of the party")
REFERENCES_1 = [
    "It is a guide to action that ensures that the military will forever heed Party commands",
    "It is the guiding principle which guarantees the military forces always being under the command of the Party",
    "It is the practical guide for the army always to heed the directions of the party",
]
HYPOTHESIS_2 = "he read the book because he was interested in world history"
REFERENCES_2 = ["he was interested in world history because he read the book"]


def test_error_rates_hand_worked():
    assert metrics.character_error_rate(["kitten"], ["sitting"]) == 0.5
    assert metrics.word_error_rate(["the cat sat"], ["the cat sat down"]) == pytest.approx(1 / 3)
    assert metrics.word_error_rate(["the cat sat"], ["a  cat\tsat"]) == pytest.approx(1 / 3)  # any whitespace splits
    assert metrics.character_error_rate(["a b"], ["ab"]) == pytest.approx(1 / 3)  # the space is a character
    assert metrics.character_error_rate(["café"], ["cafe"]) == 0.25  # code points, not bytes


def test_error_rates_pool_over_the_corpus_and_handle_empty_strings():
    assert metrics.character_error_rate(["ab", "abcd"], ["", "abcd"]) == pytest.approx(2 / 6)
    assert metrics.word_error_rate(["one two"], [""]) == 1.0
    assert metrics.word_error_rate([""], [""]) == 0.0
    assert metrics.character_error_rate([""], ["x"]) == math.inf


def test_bleu_matches_the_published_example():
    references = [REFERENCES_1, REFERENCES_2]
    assert metrics.corpus_bleu(references, [HYPOTHESIS_1, HYPOTHESIS_2]) == pytest.approx(0.5920778868801042, abs=1e-12)
    tokens = [[r.split() for r in refs] for refs in references]
    hypotheses = [HYPOTHESIS_1.split(), HYPOTHESIS_2.split()]
    assert metrics.corpus_bleu(tokens, hypotheses) == pytest.approx(0.5920778868801042, abs=1e-12)


def test_bleu_brevity_penalty_and_identity():
    assert metrics.corpus_bleu([["a b c d"]], ["a b"], max_order=1) == pytest.approx(math.exp(1 - 4 / 2))
    assert metrics.corpus_bleu([["a b c d", "a b c"]], ["a b"], max_order=1) == pytest.approx(math.exp(1 - 3 / 2))
    # references of 2 and 4 words are equally close to 3: the shorter counts, so no penalty
    assert metrics.corpus_bleu([["a b c d", "a b"]], ["a b c"], max_order=1) == 1.0
    assert metrics.corpus_bleu([["a b c d e"]], ["a b c d e"]) == 1.0
    assert metrics.corpus_bleu([["x y"]], [""]) == 0.0


@pytest.mark.parametrize(
    "smoothing, expected",
    [("none", 0.0), ("epsilon", math.sqrt(0.1 / 2)), ("add-one", math.sqrt(1 / 3)), ("exp", math.sqrt(1 / (2 * 2)))],
)
def test_bleu_smoothing_hand_worked(smoothing, expected):
    # unigrams 3/3, bigrams 0/2, equal lengths
    assert metrics.corpus_bleu([["a c b"]], ["a b c"], max_order=2, smoothing=smoothing) == pytest.approx(expected)


@pytest.mark.parametrize("smoothing", ["none", "epsilon", "add-one", "exp"])
def test_bleu_without_a_unigram_match_is_zero_whatever_the_smoothing(smoothing):
    assert metrics.corpus_bleu([["a b c"]], ["x y z"], smoothing=smoothing) == 0.0


def test_bleu_does_not_depend_on_pair_order_and_is_bounded():
    rng = np.random.default_rng(0)
    references, hypotheses = parity._text_pairs(rng)
    references = [[r] for r in references]
    score = metrics.corpus_bleu(references, hypotheses)
    order = rng.permutation(len(hypotheses))
    assert metrics.corpus_bleu([references[i] for i in order], [hypotheses[i] for i in order]) == pytest.approx(score)
    assert 0 < score < 1


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.word_error_rate("a b", "a b"), "references must be a list of strings"),
        (lambda: metrics.word_error_rate(["a"], ["a", "b"]), "same length"),
        (lambda: metrics.character_error_rate([], []), "references is empty"),
        (lambda: metrics.corpus_bleu(["a b"], ["a b"]), r"references\[0\] must be a non-empty list"),
        (lambda: metrics.corpus_bleu([["a b"]], [["a", 1]]), r"hypotheses\[0\] must be a string or a sequence"),
        (lambda: metrics.corpus_bleu([["a b"]], ["a b"], smoothing="floor"), "smoothing must be one of"),
        (lambda: metrics.corpus_bleu([["a b"]], ["a b"], max_order=0), "max_order must be an int >= 1"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["text"])
def test_agrees_with_nltk(name, seed):
    assert parity.run("text", name, seed) <= parity.TOLERANCE
