import json

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from tfcourse import UserError, agent_loop
from tfcourse.models import language

CHAT = agent_loop.chat_text([{"role": "user", "content": "What is on leaves/scab_1.jpg?"}])
REPLY = json.dumps({"tool": "classify_leaf", "arguments": {"image": "leaves/scab_1.jpg"}})


@pytest.fixture(scope="module")
def proto():
    return language.train_tokenizer([CHAT + REPLY + agent_loop.END_TURN] * 20 + ["a leaf, a photo, a sound"] * 5, 320)


def test_the_tokenizer_writes_any_text_back_exactly_and_keeps_turn_markers_whole(proto):
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    for text in (CHAT + REPLY, "unseen: Ünïcode_ÄÖ 123  two spaces\ttab\n"):
        assert tokenizer.detokenize(tokenizer(text)) == text
    ids = np.asarray(tokenizer(agent_loop.START_TURN + agent_loop.END_TURN)).tolist()
    assert ids == [tokenizer.token_to_id(agent_loop.START_TURN), tokenizer.token_to_id(agent_loop.END_TURN)]
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]


def test_a_tiny_gemma_learns_a_reply_the_backend_returns_and_reloads_from_keras(proto, tmp_path):
    keras.utils.set_random_seed(0)
    lm = language.tiny_gemma(proto, sequence_length=96, num_layers=1, hidden_dim=64, num_heads=2)
    lm.compile(optimizer=keras.optimizers.Adam(3e-3), sampler="greedy")
    lm.fit(tf.data.Dataset.from_tensors([CHAT + REPLY + agent_loop.END_TURN]).repeat(60), verbose=0)
    backend = agent_loop.CausalLMBackend(lm, max_new_tokens=64)
    assert backend(CHAT) == REPLY

    lm.save(tmp_path / "lm.keras")
    again = keras.models.load_model(tmp_path / "lm.keras")  # safe mode
    x = lm.preprocessor.generate_preprocess([CHAT])
    inputs = {"token_ids": x["token_ids"], "padding_mask": x["padding_mask"]}
    np.testing.assert_allclose(lm.backbone(inputs), again.backbone(inputs), atol=1e-6)
    assert agent_loop.CausalLMBackend(again, max_new_tokens=64)(CHAT) == REPLY

    # A preset folder loads through model.preset as a KerasHub preset does
    lm.save_to_preset(str(tmp_path / "preset"))
    assert agent_loop.CausalLMBackend(language.from_preset(str(tmp_path / "preset")), max_new_tokens=64)(CHAT) == REPLY


def test_an_unknown_preset_is_named_with_the_choices():
    with pytest.raises(UserError, match="'gemma_huge'.*gemma3_instruct_1b"):
        language.from_preset("gemma_huge")


def test_chat_examples_weight_the_models_turns_only_and_tokenize_as_the_whole_chat(proto):
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    messages = [{"role": "user", "content": "What is on leaves/scab_1.jpg?"}, {"role": "model", "content": REPLY},
                {"role": "user", "content": "Observation: {}"}, {"role": "model", "content": '{"answer": "scab"}'}]
    short = [{"role": "user", "content": "a sound"}, {"role": "model", "content": '{"answer": "a leaf"}'}]
    x, y, weights = language.chat_examples(tokenizer, [messages, short], 160)
    assert x["token_ids"].shape == x["padding_mask"].shape == y.shape == weights.shape == (2, 160)
    for row, chat, answers in ((0, messages, REPLY + agent_loop.END_TURN + '{"answer": "scab"}'), (1, short, '{"answer": "a leaf"}')):
        n = int(x["padding_mask"][row].sum())
        whole = agent_loop.chat_text(chat)[: -len(agent_loop.START_TURN + "model\n")]  # without the open turn
        assert x["token_ids"][row, 1:n].tolist() == np.asarray(tokenizer(whole)).tolist()  # after <bos>
        np.testing.assert_array_equal(x["token_ids"][row, 1:n], y[row, : n - 1])  # labels: the next token
        assert tokenizer.detokenize(y[row][weights[row] > 0]) == answers + agent_loop.END_TURN
        assert weights[row, n - 1 :].sum() == 0 and x["token_ids"][row, n:].sum() == 0 and y[row, n - 1 :].sum() == 0
    alone = language.chat_examples(tokenizer, [short], 160)  # a chat's row does not depend on the others
    np.testing.assert_array_equal(alone[0]["token_ids"][0], x["token_ids"][1])
    np.testing.assert_array_equal(alone[2][0], weights[1])
    with pytest.raises(UserError, match="conversation 0 is .* more than model.sequence_length = 20"):
        language.chat_examples(tokenizer, [messages], 20)
