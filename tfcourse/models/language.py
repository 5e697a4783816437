"""Causal language models from KerasHub: Gemma instruct presets for users with a network, and a tiny
Gemma of the same classes with a SentencePiece tokenizer trained here, on the course's own text."""

import io
import os

import keras_hub
import numpy as np
import sentencepiece

from tfcourse import UserError
from tfcourse.agent_loop import END_TURN, START_TURN

# KerasHub presets an agent can run on (from Kaggle, so a network and an accepted Gemma licence).
# Memory: the weights alone, in bfloat16 (2 bytes a parameter); generation adds its cache.
PRESETS = {
    "gemma3_instruct_1b": "1.0B parameters, about 2 GB",
    "gemma2_instruct_2b_en": "2.6B parameters, about 5.2 GB",
    "gemma3_instruct_4b_text": "3.9B parameters, about 7.8 GB",
}


def train_tokenizer(texts, vocabulary_size):
    """A SentencePiece BPE model (bytes of its proto) for GemmaTokenizer, from `texts`.

    keras_hub.tokenizers.compute_sentence_piece_proto cannot name the pad / bos / eos pieces and the
    turn markers GemmaTokenizer needs, so sentencepiece's own trainer (which it wraps) is called.
    Text is kept as written (no normalisation, spaces and newlines kept), digits are split one by
    one and unseen characters fall back to bytes, so any file name can be written. The turn markers and
    the newline are always tokens of their own, so a chat tokenizes as its turns do one by one."""
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, vocab_size=vocabulary_size, model_type="bpe",
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
        unk_piece="<unk>", user_defined_symbols=[START_TURN, END_TURN, "\n"], normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True, byte_fallback=True, character_coverage=1.0,
        max_sentence_length=1 << 16, hard_vocab_limit=False, minloglevel=2)
    return proto.getvalue()


def chat_examples(tokenizer, chats, sequence_length):
    """Conversations (lists of messages) -> stacked ({"token_ids", "padding_mask"}, next-token labels,
    sample weights), one row each, for a CausalLM fitted with `preprocessor=None`: the loss falls on
    the model's turns only (their text and closing marker), not on the prompt, the requests or the
    observations it is given. Each distinct piece of text is tokenized once, all in one call (3,000
    agent chats on 2 cores: 0.6 s, against 14.6 s for a call per piece)."""
    def pieces(messages):  # (text, whether the loss falls on it)
        return [piece for m in messages for piece in (
            (f"{START_TURN}{m['role']}\n", 0), (m["content"] + END_TURN, int(m["role"] == "model")), ("\n", 0))]

    pieced = [pieces(messages) for messages in chats]
    texts = sorted({text for chat in pieced for text, _ in chat})
    ids_of = dict(zip(texts, tokenizer(texts)))  # lists of ids
    bos = tokenizer.token_to_id("<bos>")
    ids = np.zeros((len(pieced), sequence_length + 1), "int32")
    weights = np.zeros((len(pieced), sequence_length + 1), "float32")
    lengths = np.zeros((len(pieced), 1), "int32")
    for n, chat in enumerate(pieced):
        chat_ids = [bos] + [i for text, _ in chat for i in ids_of[text]]
        if len(chat_ids) > sequence_length + 1:
            raise UserError(f"conversation {n} is {len(chat_ids) - 1} tokens, more than model.sequence_length = {sequence_length}.")
        ids[n, : len(chat_ids)] = chat_ids
        weights[n, : len(chat_ids)] = [0] + [trained for text, trained in chat for _ in ids_of[text]]
        lengths[n] = len(chat_ids)
    x = {"token_ids": ids[:, :-1], "padding_mask": np.arange(sequence_length) < lengths}
    return x, ids[:, 1:], weights[:, 1:]


def tiny_gemma(proto, sequence_length, num_layers=2, hidden_dim=128, num_heads=4):
    """A Gemma causal LM of KerasHub's classes at a size a CPU trains, over the tokenizer `proto`."""
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(), num_layers=num_layers, num_query_heads=num_heads,
        num_key_value_heads=1, hidden_dim=hidden_dim, intermediate_dim=4 * hidden_dim, head_dim=hidden_dim // num_heads)
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=sequence_length)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def from_preset(name):
    """A KerasHub instruct preset (downloaded from Kaggle once, then cached), or a local preset folder
    (`save_to_preset`). Presets hold code configs and weights: load only ones you trust."""
    if os.path.isdir(name):
        return keras_hub.models.CausalLM.from_preset(name)
    if name not in PRESETS:
        raise UserError(f"model.preset = {name!r}: not a folder; choose one of {sorted(PRESETS)} (memory: {PRESETS}).")
    return keras_hub.models.CausalLM.from_preset(name)
