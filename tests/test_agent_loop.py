import json
import os

import pytest

from tfcourse import UserError, agent_loop
from tfcourse.agent_loop import Argument, CallError, ScriptedBackend, Tool


def _tools(log):
    def classify(image):
        log.append(image)
        if os.path.basename(image) == "broken.jpg":
            raise UserError(f"{image!r} is not an image")
        return {"top_k": [{"class": "scab", "probability": 0.9}]}

    return {
        "classify_leaf": Tool("classify_leaf", "The disease on an apple leaf photo.",
                              (Argument("image", "file"),), classify),
        "segment": Tool("segment", "The mask of the object in a box.",
                        (Argument("image", "file"), Argument("box", "box")),
                        lambda image, box: {"box": box}),
        "generate_image": Tool("generate_image", "Draws a caption.", (Argument("caption", "text"),),
                               lambda caption: {"caption": caption}),
    }


@pytest.fixture
def folders(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "leaves").mkdir(parents=True)
    for name in ("scab.jpg", "broken.jpg"):
        (allowed / "leaves" / name).write_bytes(b"x")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", allowed / "link.txt")
    return [str(allowed)]


def _call(tool, **arguments):
    return json.dumps({"tool": tool, "arguments": arguments})


def test_a_call_runs_its_tool_and_the_answer_ends_the_transcript(folders, tmp_path):
    log = []
    backend = ScriptedBackend([_call("classify_leaf", image="leaves/scab.jpg"), '{"answer": "scab"}'])
    transcript = agent_loop.run_agent(backend, _tools(log), "What is wrong with leaves/scab.jpg?", folders)
    assert transcript.outcome == "answer" and transcript.answer == "scab"
    assert log == [os.path.join(os.path.realpath(folders[0]), "leaves", "scab.jpg")]
    assert [e["kind"] for e in transcript.events] == ["call", "answer"]
    assert transcript.events[0]["observation"]["result"]["top_k"][0]["class"] == "scab"
    # The model saw the tools with typed arguments, then the observation of its call, in Gemma's turns
    first, second = backend.prompts
    assert "- segment(image: file, box: box): The mask of the object in a box.\n" in first
    assert "Types: file = a file's path, as the request writes it; box = [x0, y0, x1, y1], pixels" in first
    assert first.startswith("<start_of_turn>user\n") and first.endswith("<start_of_turn>model\n")
    assert second.startswith(first) and '<start_of_turn>user\nObservation: {"result": {"top_k"' in second

    transcript.save(str(tmp_path / "out" / "transcript"))
    assert json.load(open(tmp_path / "out" / "transcript.json"))["answer"] == "scab"
    text = (tmp_path / "out" / "transcript.txt").read_text()
    assert "[1] call: " in text and text.endswith("outcome: answer: scab\n")


@pytest.mark.parametrize("reply, error", [
    ("classify_leaf(leaves/scab.jpg)", "not JSON"),
    ('["classify_leaf"]', "not an object"),
    ('{"tool": "classify_leaf", "args": {}}', "exactly"),
    (_call("classify", image="leaves/scab.jpg"), "no tool 'classify'; the tools are classify_leaf, segment, generate_image"),
    (_call("segment", image="leaves/scab.jpg"), "missing ['box']"),
    (_call("classify_leaf", image="leaves/scab.jpg", top_k=3), "unknown ['top_k']"),
    (_call("classify_leaf", image=3), "must be a file's path"),
    (_call("generate_image", caption="  "), "must be a non-empty string"),
    (_call("segment", image="leaves/scab.jpg", box=[1, 2, 3]), "must be [x0, y0, x1, y1]"),
    (_call("segment", image="leaves/scab.jpg", box=[5, 2, 3, 4]), "x0 < x1"),
    (_call("segment", image="leaves/scab.jpg", box=[1, 2, "3", 4]), "must be [x0, y0, x1, y1]"),
    (_call("classify_leaf", image="../secret.txt"), "'..' is not allowed"),
    (_call("classify_leaf", image="leaves/../../secret.txt"), "'..' is not allowed"),
    (_call("classify_leaf", image="/etc/passwd"), "outside the allowed folders"),
    (_call("classify_leaf", image="link.txt"), "outside the allowed folders"),  # a link out
    (_call("classify_leaf", image="leaves/none.jpg"), "no such file"),
])
def test_a_bad_call_is_an_observation_and_the_model_retries(folders, reply, error):
    log = []
    backend = ScriptedBackend([reply, _call("classify_leaf", image="leaves/scab.jpg"), '{"answer": "scab"}'])
    transcript = agent_loop.run_agent(backend, _tools(log), "request", folders)
    invalid = transcript.events[0]
    assert invalid["kind"] == "invalid" and error in invalid["observation"]["error"], invalid
    assert "Observation: " + json.dumps(invalid["observation"]) in backend.prompts[1]
    assert len(log) == 1 and transcript.outcome == "answer"  # the bad call ran nothing; the retry ran


def test_an_absolute_path_inside_an_allowed_folder_is_accepted(folders):
    path = os.path.join(folders[0], "leaves", "scab.jpg")
    tool, arguments = agent_loop.check_call({"tool": "classify_leaf", "arguments": {"image": path}}, _tools([]), folders)
    assert arguments == {"image": os.path.realpath(path)}


def test_a_failing_tool_is_reported_and_the_loop_goes_on(folders):
    backend = ScriptedBackend([_call("classify_leaf", image="leaves/broken.jpg"), '{"answer": "I could not read it."}'])
    transcript = agent_loop.run_agent(backend, _tools([]), "request", folders)
    failed = transcript.events[0]
    assert failed["kind"] == "tool_error" and failed["tool"] == "classify_leaf"
    assert failed["observation"]["error"].startswith("classify_leaf failed: ") and "is not an image" in failed["observation"]["error"]
    assert "tool_error" in transcript.text() and transcript.outcome == "answer"


def test_the_step_limit_ends_a_loop_that_never_answers(folders):
    backend = ScriptedBackend([_call("generate_image", caption="a red seven")] * 10)
    transcript = agent_loop.run_agent(backend, _tools([]), "request", folders, max_steps=3)
    assert transcript.outcome == "step_limit" and transcript.answer is None
    assert len(backend.prompts) == 3 and [e["step"] for e in transcript.events] == [1, 2, 3]
    with pytest.raises(UserError, match="max_steps = 0"):
        agent_loop.run_agent(backend, _tools([]), "request", folders, max_steps=0)


def test_parse_turn_accepts_a_closing_end_of_turn_marker():
    assert agent_loop.parse_turn(' {"answer": "done"}<end_of_turn>') == {"answer": "done"}
    with pytest.raises(CallError):
        agent_loop.parse_turn('{"answer": 3}')
