import json

import numpy as np
import pytest

from tfcourse import UserError, agent_loop, agent_tools
from tfcourse.data import captioned_digits, tool_requests

def _files(split):
    return {kind: [f"{kind}/{split}_{i}.{'wav' if kind == 'audio' else 'jpg'}" for i in range(5)]
            for kind in tool_requests.FILE_KINDS.values()}


def _tools():
    return agent_tools.tools({name: None for name in agent_tools.SIGNATURES})


def test_held_out_requests_share_no_template_file_box_or_caption_with_training():
    train = tool_requests.conversations(1500, _files("train"), held_out=False, seed=0)
    test = tool_requests.conversations(200, _files("test"), held_out=True, seed=1)
    for tool in tool_requests.PHRASINGS:
        templates = tool_requests.templates(tool)
        held = {t for t, (_, held_out) in enumerate(templates) if held_out}
        assert {c.template for c in train if c.tool == tool} == set(range(len(templates))) - held
        assert {c.template for c in test if c.tool == tool} == held
        # every word of a held-out verb-object pair is in training, the held-out questions are new whole
        training_text = " ".join(c.request for c in train if c.tool == tool)
        phrasing = tool_requests.PHRASINGS[tool]
        assert all(verb.lower() in training_text.lower() for verb in phrasing["verbs"])
        assert not any(q.split("{")[0] and q.split("{")[0] in training_text for q in phrasing["questions"][-2:])
    # Lead-ins lower-case an imperative's verb, and "Could you" makes it a question
    rng = np.random.default_rng(0)
    assert {tool_requests.phrase("Draw {caption}", rng) for _ in range(300)} == {
        lead_in + body + closing for lead_in, body in [("", "Draw {caption}."), ("Please ", "draw {caption}."),
                                                       ("Could you ", "draw {caption}?"), ("I need you to ", "draw {caption}."),
                                                       ("Go ahead and ", "draw {caption}.")]
        for closing in tool_requests.CLOSINGS}
    for field in ("audio", "image", "caption"):
        train_values = {c.arguments[field] for c in train if field in c.arguments}
        test_values = {c.arguments[field] for c in test if field in c.arguments}
        assert train_values and test_values and not train_values & test_values, field
    boxes = [{tuple(c.arguments["box"]) for c in conversations if c.tool == "segment"} for conversations in (train, test)]
    assert boxes[0] and boxes[1] and not boxes[0] & boxes[1]
    assert [c.tool for c in train[:5]] == list(tool_requests.PHRASINGS)  # the five tools in turn
    # Training sees each tool's argument at the start of a request too; file extensions vary
    assert all(any(t.startswith("{") and not held for t, held in tool_requests.templates(tool))
               for tool in tool_requests.PHRASINGS)
    names = tool_requests.random_file_names(100, seed=0)
    assert {p.rsplit(".", 1)[1] for p in names["leaf"]} == {"jpg", "jpeg", "png"}
    assert sum(c.arguments.get("caption") in tool_requests.split_captions(False) for c in train) > 20  # real ones too


def test_a_conversation_is_a_valid_call_then_an_answer_read_from_the_observation(tmp_path):
    tools = _tools()
    for c in tool_requests.conversations(20, _files("train"), held_out=False, seed=0):
        user, call, observation, answer = c.messages(tools)
        assert user["content"].startswith(agent_loop.system_prompt(tools)) and user["content"].endswith(c.request)
        turn = agent_loop.parse_turn(call["content"])
        assert turn == {"tool": c.tool, "arguments": c.arguments}
        for value in c.arguments.values():  # every argument is written in the request
            assert (json.dumps(value) if isinstance(value, list) else value) in c.request
        assert json.loads(observation["content"].removeprefix("Observation: "))["result"] == c.observation
        assert agent_loop.parse_turn(answer["content"]) == {"answer": c.answer}
        if "top_k" in c.observation:
            best = c.observation["top_k"][0]
            assert f"{best['class']} (probability {best['probability']})" in c.answer
            assert best["probability"] == max(k["probability"] for k in c.observation["top_k"])
        else:
            assert next(v for k, v in c.observation.items() if k.endswith("_png")) in c.answer
    # Class names are made up per conversation: the answer can only be copied from the observation
    names = [c.observation["top_k"][0]["class"] for c in tool_requests.conversations(
        60, _files("train"), held_out=False, seed=0) if "top_k" in c.observation]
    assert len(set(names)) == len(names) == 36
    assert tool_requests.answer_for("segment", {"mask_fraction": 0.125, "mask_png": "outputs/m.mask.png"}) == \
        "The mask covers a fraction 0.125 of the image: outputs/m.mask.png."


def test_missing_files_are_named():
    files = _files("train")
    files["leaf"] = []
    with pytest.raises(UserError, match="no leaf files"):
        tool_requests.conversations(5, files, held_out=False, seed=0)


def test_random_file_names_are_many_distinct_and_of_each_kind():
    names = tool_requests.random_file_names(200, seed=0)
    assert set(names) == set(tool_requests.FILE_KINDS.values())
    for kind, paths in names.items():
        assert len(set(paths)) > 190 and all(p.startswith(kind + "/") for p in paths)
        assert all(p.endswith(".wav") == (kind == "audio") for p in paths)
    assert tool_requests.random_file_names(5, seed=0) != tool_requests.random_file_names(5, seed=1)


def test_held_out_captions_cover_every_colour_and_digit_and_observations_look_like_real_results():
    held_out = tool_requests.split_captions(True)
    for word in (*captioned_digits.COLOURS, *captioned_digits.DIGITS):
        assert any(f" {word} " in c for c in held_out), word
    assert len(held_out) * 3 == len(tool_requests.split_captions(False))
    rng = np.random.default_rng(0)
    results = [tool_requests.fake_observation("classify_leaf", {}, rng)["top_k"] for _ in range(200)]
    assert any(r[0]["probability"] == 1.0 and r[1]["probability"] == 0.0 for r in results)  # as a sure classifier's
    names = [k["class"] for r in results for k in r]
    assert any("___" in n for n in names) and any(n.split("_")[0] == n.split("_")[-1] != n for n in names)
    assert len(set(names)) > 590
    vowels = set("aeiouy")
    words = [tool_requests.pronounceable_word(rng) for _ in range(200)]
    assert len(set(words)) > 150 and all(w.isalpha() and w.islower() and set(w) & vowels for w in words)
