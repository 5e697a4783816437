"""Text metrics: error rates by edit distance, and corpus BLEU. Conventions:

- CER and WER are corpus rates: the Levenshtein distances (substitution, insertion and deletion
  each cost 1; `tf.edit_distance`) summed over all pairs, over the summed reference lengths. CER
  counts Unicode code points, spaces included; WER counts words split on ASCII whitespace. An empty
  hypothesis costs its reference's length. When every reference is empty the rate is 0 if every
  hypothesis is empty too, else +inf.
- BLEU is NLTK's `corpus_bleu` with uniform weights over the orders 1..max_order (BLEU-1..4): clipped
  n-gram matches and n-gram counts summed over the corpus (a sentence counts at least 1 n-gram per
  order, as NLTK); brevity penalty exp(1 - r / c) when c <= r, with r the summed reference lengths
  closest to each hypothesis (the shorter on ties), and 0 for an empty corpus. With no unigram match
  BLEU is 0 whatever the smoothing (NLTK's rule). Smoothing, as NLTK's SmoothingFunction:
  "none"     method0: an order with no match makes BLEU 0 (NLTK returns about 1e-77, from float min);
  "epsilon"  method1: an order with no match counts 0.1 matches;
  "add-one"  method2: adds 1 to the matches and the count of every order >= 2 (Lin and Och 2004);
  "exp"      method3: NIST geometric smoothing, 1 / (2^k count) for the k-th order with no match
             (mteval-v13a, sacrebleu's "exp").
- Sentences are strings, split on whitespace, or sequences of tokens taken as they are. Each
  hypothesis has a list of one or more references.
"""

import numpy as np
import tensorflow as tf

from tfcourse.metrics import _validate

SMOOTHING = ("none", "epsilon", "add-one", "exp")


def _strings(name, values):
    if isinstance(values, str) or not hasattr(values, "__iter__") or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{name} must be a list of strings.")
    return list(values)


def _error_rate(references, hypotheses, split):
    references = _strings("references", references)
    hypotheses = _strings("hypotheses", hypotheses)
    _validate.same_length("references", references, "hypotheses", hypotheses)
    _validate.non_empty("references", references)
    truth, hypothesis = split(tf.constant(references)), split(tf.constant(hypotheses))
    distance = float(tf.reduce_sum(tf.edit_distance(hypothesis.to_sparse(), truth.to_sparse(), normalize=False)))
    length = float(tf.reduce_sum(truth.row_lengths()))
    if length == 0:
        return 0.0 if distance == 0 else float("inf")
    return distance / length


def character_error_rate(references, hypotheses):
    """CER: character edits over reference characters, pooled over the corpus."""
    return _error_rate(references, hypotheses, lambda text: tf.strings.unicode_split(text, "UTF-8"))


def word_error_rate(references, hypotheses):
    """WER: word edits over reference words, pooled over the corpus."""
    return _error_rate(references, hypotheses, tf.strings.split)


def _tokens(name, sentence):
    if isinstance(sentence, str):
        return sentence.split()
    if not hasattr(sentence, "__iter__") or not all(isinstance(token, str) for token in sentence):
        raise ValueError(f"{name} must be a string or a sequence of string tokens.")
    return list(sentence)


def _ngrams(ids, lengths, order):
    """(sentence index, [m, order] n-grams) of every n-gram inside each sentence of the concatenated `ids`."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    sentence_end = np.cumsum(lengths)[owner]
    starts = np.flatnonzero(np.arange(len(ids)) + order <= sentence_end)
    return owner[starts], ids[starts[:, None] + np.arange(order)]


def _clipped_matches(hypotheses, references, order):
    """Hypothesis n-gram counts clipped by the largest count in any of their references, summed.

    Each argument is (token ids, sentence lengths, owner), owner being the hypothesis a sentence belongs to.
    """
    (hyp_sentences, hyp_grams), (ref_sentences, ref_grams) = (_ngrams(ids, lengths, order)
                                                              for ids, lengths, _ in (hypotheses, references))
    if not len(hyp_grams) or not len(ref_grams):
        return 0
    _, gram_ids = np.unique(np.concatenate([hyp_grams, ref_grams]), axis=0, return_inverse=True)
    gram_ids = gram_ids.reshape(-1)
    num_grams = gram_ids.max() + 1
    hyp_keys, hyp_counts = np.unique(hyp_sentences * num_grams + gram_ids[: len(hyp_grams)], return_counts=True)
    ref_keys, ref_counts = np.unique(ref_sentences * num_grams + gram_ids[len(hyp_grams):], return_counts=True)
    # a reference's (n-gram, count) as a key of its hypothesis; keep the largest count per key
    owner_keys = references[2][ref_keys // num_grams] * num_grams + ref_keys % num_grams
    at = np.searchsorted(hyp_keys, owner_keys)
    found = (at < len(hyp_keys)) & (hyp_keys[np.minimum(at, len(hyp_keys) - 1)] == owner_keys)
    max_ref_counts = np.zeros(len(hyp_keys), np.int64)
    np.maximum.at(max_ref_counts, at[found], ref_counts[found])
    return int(np.minimum(hyp_counts, max_ref_counts).sum())


def _smoothed_log_precisions(matches, counts, smoothing, max_order):
    """log p_n per order after smoothing; None when BLEU is 0."""
    matches, counts = np.asarray(matches, float), np.asarray(counts, float)
    missing = matches == 0
    if smoothing == "none" and missing.any():
        return None
    if smoothing == "epsilon":
        matches = np.where(missing, 0.1, matches)
    elif smoothing == "add-one":
        higher = np.arange(max_order) >= 1
        matches, counts = matches + higher, counts + higher
    elif smoothing == "exp":
        matches = np.where(missing, 1 / 2.0 ** np.cumsum(missing), matches)
    return np.log(matches) - np.log(counts)


def corpus_bleu(references, hypotheses, max_order=4, smoothing="none"):
    """Corpus BLEU-`max_order` in [0, 1]: `references[i]` is the list of references of `hypotheses[i]`."""
    max_order = _validate.positive_int("max_order", max_order)
    _validate.choice("smoothing", smoothing, SMOOTHING)
    _validate.same_length("references", references, "hypotheses", hypotheses)
    _validate.non_empty("hypotheses", hypotheses)
    hypotheses = [_tokens(f"hypotheses[{i}]", h) for i, h in enumerate(hypotheses)]
    reference_lists = []
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not hasattr(refs, "__len__") or not len(refs):
            raise ValueError(f"references[{i}] must be a non-empty list of references (strings or token lists).")
        reference_lists.append([_tokens(f"references[{i}][{j}]", r) for j, r in enumerate(refs)])
    references = [r for refs in reference_lists for r in refs]
    owner = np.repeat(np.arange(len(hypotheses)), [len(refs) for refs in reference_lists])
    _, ids = np.unique(np.array([t for sentence in hypotheses + references for t in sentence], dtype=str),
                       return_inverse=True)
    hyp_lengths = np.array([len(h) for h in hypotheses], np.int64)
    ref_lengths = np.array([len(r) for r in references], np.int64)
    num_hyp_tokens = hyp_lengths.sum()
    hyp_side = (ids[:num_hyp_tokens], hyp_lengths, np.arange(len(hypotheses)))
    ref_side = (ids[num_hyp_tokens:], ref_lengths, owner)
    matches = [_clipped_matches(hyp_side, ref_side, n) for n in range(1, max_order + 1)]
    counts = [np.maximum(hyp_lengths - n + 1, 1).sum() for n in range(1, max_order + 1)]
    if num_hyp_tokens == 0 or matches[0] == 0:
        return 0.0
    log_precisions = _smoothed_log_precisions(matches, counts, smoothing, max_order)
    if log_precisions is None:
        return 0.0
    # the reference length closest to each hypothesis, the shorter on ties: sort by (owner, |difference|, length)
    by_closeness = np.lexsort((ref_lengths, np.abs(ref_lengths - hyp_lengths[owner]), owner))
    first_of_owner = np.r_[0, np.cumsum([len(refs) for refs in reference_lists])[:-1]]
    closest = ref_lengths[by_closeness[first_of_owner]].sum()
    brevity_penalty = 1.0 if num_hyp_tokens > closest else np.exp(1 - closest / num_hyp_tokens)
    return float(brevity_penalty * np.exp(log_precisions.mean()))
