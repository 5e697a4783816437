import json
import os

import keras
import pytest

from tfcourse import UserError, agent_loop, agent_tools, cli, config
from tfcourse.data import tool_requests
from tfcourse.lessons import agent, sound_yamnet


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The agent's smoke run with one real tool: classify_sound over a sound-yamnet smoke run."""
    root = tmp_path_factory.mktemp("agent")
    sound_run = str(root / "sound")
    sound_yamnet.run(config.load(sound_yamnet.Config, base=sound_yamnet.SMOKE), sound_run)
    run_dir = str(root / "agent")
    report = agent.run(config.load(agent.Config, base=agent.SMOKE, overrides=[f"tools.classify_sound={sound_run}"]), run_dir)
    return run_dir, sound_run, report


def test_smoke_run_scores_every_held_out_request_and_keeps_a_reloadable_model(smoke):
    run_dir, sound_run, report = smoke
    assert json.load(open(os.path.join(run_dir, "report.json")))["lesson"] == "agent"
    for name in ("rates.png", "training_curves.png", "summary.md", agent.MODEL_FILE):
        assert os.path.exists(os.path.join(run_dir, name)), name
    rates = report["rates"]
    assert rates["all"]["count"] == 10 and all(rates["by_tool"][t]["count"] == 2 for t in agent_tools.SIGNATURES)
    assert all(0 <= rates["all"][k] <= 1 for k in ("valid", "right"))
    # End to end is measured where a tool has a run, and only there
    assert rates["by_tool"]["classify_sound"]["end_to_end_count"] == 2 and rates["all"]["end_to_end_count"] == 2
    assert all(rates["by_tool"][t]["end_to_end"] is None for t in agent_tools.SIGNATURES if t != "classify_sound")
    transcripts = sorted(f for f in os.listdir(os.path.join(run_dir, "transcripts")) if f.endswith(".json"))
    assert len(transcripts) == 10 and sum(report["outcomes"].values()) >= 10
    assert "tiny Gemma trained here" in report["note"] and "noise files" in report["note"]
    assert report["model"]["parameters"] > 0 and report["export"]["keras"]["reloaded_replies_identical"] == 3
    # The next-token logits as SavedModel and TFLite, checked against Keras on three chats
    for name in ("saved_model/saved_model.pb", "model_float32.tflite", "tokenizer.model", "export_metrics.json"):
        assert os.path.exists(os.path.join(run_dir, "export", name)), name
    for variant in ("saved_model", "float32"):
        assert report["export"][variant]["max_abs_diff"] <= 1e-4 and report["export"][variant]["next_token_agreement"] == 1.0
    reloaded = keras.saving.load_model(os.path.join(run_dir, agent.MODEL_FILE))  # safe mode
    assert reloaded.preprocessor.tokenizer.token_to_id(agent_loop.END_TURN) > 3
    # Held-out requests name files copied into the inbox under names no training request used
    inbox = os.path.join(run_dir, "inbox")
    staged = sorted(os.path.relpath(os.path.join(r, f), inbox) for r, _, fs in os.walk(inbox) for f in fs)
    assert len(staged) == 12 and {p.split(os.sep)[0] for p in staged} == set(tool_requests.FILE_KINDS.values())


def test_a_real_tool_scores_end_to_end_only_with_the_answer_its_result_gives(smoke, tmp_path):
    run_dir, sound_run, _ = smoke
    tools = agent_tools.tools(agent_tools.runners({**{t: "" for t in agent_tools.SIGNATURES}, "classify_sound": sound_run},
                                                  str(tmp_path)))
    inbox = os.path.join(run_dir, "inbox")
    clip = sorted(os.listdir(os.path.join(inbox, "audio")))[0]
    expected = tool_requests.Conversation(f"Classify audio/{clip}.", "classify_sound", {"audio": f"audio/{clip}"}, {}, "", 0)
    wanted = agent_loop.check_call({"tool": expected.tool, "arguments": expected.arguments}, tools, [inbox])[1]
    result = tools["classify_sound"].run(**wanted)
    classes = json.load(open(os.path.join(sound_run, "report.json")))["data"]["class_names"]
    assert len(result["top_k"]) == 3 and {k["class"] for k in result["top_k"]} <= set(classes)
    call = json.dumps({"tool": "classify_sound", "arguments": {"audio": f"audio/{clip}"}})

    def scored(*replies):
        transcript = agent_loop.run_agent(agent_loop.ScriptedBackend(replies), tools, expected.request, [inbox])
        return agent.score(transcript, expected, wanted, tools, [inbox], tool_has_run=True)

    right_answer = json.dumps({"answer": tool_requests.answer_for("classify_sound", result)})
    assert scored(call, right_answer) == {"valid": True, "right": True, "end_to_end": True}
    assert scored(call, '{"answer": "a dog"}') == {"valid": True, "right": True, "end_to_end": False}
    other = json.dumps({"tool": "classify_sound", "arguments": {"audio": "audio/" + sorted(os.listdir(os.path.join(inbox, "audio")))[1]}})
    assert scored(other, right_answer) == {"valid": True, "right": False, "end_to_end": False}
    assert scored("not json", call, right_answer) == {"valid": False, "right": False, "end_to_end": True}  # a retry
    missing = json.dumps({"tool": "classify_sound", "arguments": {"audio": "audio/missing.wav"}})
    assert scored(missing, call, right_answer) == {"valid": True, "right": False, "end_to_end": True}  # well-formed, wrong file
    outside = json.dumps({"tool": "classify_sound", "arguments": {"audio": "../x.wav"}})
    assert scored(outside, right_answer)["valid"] is False
    # A tool without a run fails as an observation, not a crash; a run of the wrong lesson is refused
    transcript = agent_loop.run_agent(agent_loop.ScriptedBackend(['{"tool": "generate_image", "arguments": {"caption": "a red one"}}',
                                                                 '{"answer": "no"}']), tools, "Draw a red one.", [inbox])
    assert transcript.events[0]["kind"] == "tool_error" and "tools.generate_image" in transcript.events[0]["observation"]["error"]
    with pytest.raises(UserError, match="is a sound-yamnet run; classify_leaf needs a crop-disease run"):
        agent_tools.runners({"classify_leaf": sound_run}, str(tmp_path))
    with pytest.raises(UserError, match="not a finished run"):
        agent_tools.runners({"segment": str(tmp_path / "nothing")}, str(tmp_path))


def test_request_files_come_from_folders_under_new_names_and_bad_folders_are_named(tmp_path):
    leaves = tmp_path / "leaves" / "scab"
    leaves.mkdir(parents=True)
    for i in range(4):
        (leaves / f"Leaf {i}.JPG").write_bytes(bytes([i]) * 10)
    (leaves / "notes.txt").write_text("not a photo")
    data = agent.DataConfig(leaf_photos=str(tmp_path / "leaves"), files_per_kind=3)
    taken = set(tool_requests.random_file_names(500, data.seed)["leaf"])
    staged = agent.stage_request_files(data, str(tmp_path / "inbox"), taken)
    assert len(staged["leaf"]) == 3 and all(p.startswith("leaf/") and p.endswith(".jpg") for p in staged["leaf"])
    contents = {(tmp_path / "inbox" / p).read_bytes() for p in staged["leaf"]}
    assert contents <= {bytes([i]) * 10 for i in range(4)} and len(contents) == 3
    assert not {os.path.splitext(p)[0] for p in staged["leaf"]} & {os.path.splitext(p)[0] for p in taken}
    assert len(staged["audio"]) == 3 and all(p.endswith(".wav") for p in staged["audio"])  # synthetic
    with pytest.raises(UserError, match="leaf folder .* does not exist"):
        agent.stage_request_files(agent.DataConfig(leaf_photos=str(tmp_path / "leaves" / "empty")), str(tmp_path / "i"), set())
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"person folder .*empty.* has no \.jpg"):
        agent.stage_request_files(agent.DataConfig(person_photos=str(tmp_path / "empty")), str(tmp_path / "i"), set())


def test_bad_settings_are_refused_with_the_key_named():
    with pytest.raises(UserError, match="hidden_dim = 100 must be a multiple of model.num_heads = 3"):
        config.load(agent.Config, overrides=["model.hidden_dim=100", "model.num_heads=3"])
    with pytest.raises(UserError, match="agent.max_steps"):
        config.load(agent.Config, overrides=["agent.max_steps=0"])


def test_ask_runs_the_agent_of_a_run_on_a_request_and_saves_the_transcript(smoke, capsys, tmp_path):
    run_dir, _, _ = smoke
    clip = sorted(os.listdir(os.path.join(run_dir, "inbox", "audio")))[0]
    assert cli.main(["ask", run_dir, f"What is making the sound in audio/{clip}?"]) == 0
    printed = capsys.readouterr().out
    saved = json.load(open(os.path.join(run_dir, "asked", "0000.json")))
    assert saved["request"] == f"What is making the sound in audio/{clip}?" and f"[1] {saved['events'][0]['reply'].strip()}" in printed
    assert cli.main(["ask", str(tmp_path), "Draw a red one."]) == 2
    assert "is not a finished agent run" in capsys.readouterr().err
    assert cli.main(["ask", run_dir, "Draw a red one.", "--folder", str(tmp_path / "none")]) == 2
