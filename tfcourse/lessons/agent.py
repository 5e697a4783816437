"""
Title: A tool-using agent over the course's own models
Description: A KerasHub causal language model answers requests such as "Is the leaf in
leaf/x7k2.jpg healthy?" by calling tools: the sound, leaf, pose, segmentation and text-to-image
models other lessons trained and exported. Each turn it writes one JSON object, a tool call or the
final answer; the loop checks the call, runs the tool, and shows the model what came back. Offline,
the model is a tiny Gemma fine-tuned here on tool-use conversations written from templates, and
measured on requests phrased and filled in ways it never saw.

    tfcourse run agent    # tools over saved_models/<lesson> runs; the small model trained here
    tfcourse run agent --set model.preset=gemma3_instruct_1b    # a Gemma instruct preset, as it is (network)
    tfcourse run agent --smoke    # tiny model, few conversations, no tool runs: a minute or two on a CPU
    TFCOURSE_ASSETS=../shared/assets tfcourse run agent --config configs/agent-assets.yaml

The pieces, by name:
- tfcourse.agent_loop: the system prompt, the JSON turn format, checking a call against the tool's
  signature (files confined to the allowed folders), the loop with its step limit, the transcript;
- tfcourse.agent_tools: the five tools over exported runs (`tfcourse predict`'s functions);
- tfcourse.data.tool_requests: the synthetic conversations, split by template and by argument;
- tfcourse.models.language: the KerasHub Gemma presets, and the tiny Gemma with its own tokenizer.

Three rates on held-out requests, each from the same agent runs:
- valid: the model's first turn is a well-formed tool call (JSON, a known tool, the tool's
  arguments with the right types, a path inside the allowed folder; the file need not exist);
- right: that call is the expected tool with exactly the request's arguments;
- end to end: with the real tools, the loop ends in the answer the expected call's real result gives.

The fine-tuned model is kept as RUN_DIR/agent_lm.keras (tokenizer inside), and its next-token
logits as a SavedModel and a float32 TFLite model in RUN_DIR/export with tokenizer.model, each
checked against Keras before it is kept.
"""

import dataclasses
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from tfcourse import UserError, agent_loop, agent_tools, export, runs, train, viz
from tfcourse.data import tool_requests
from tfcourse.models import language

FILE_TYPES = {"audio": (".wav",), "leaf": (".jpg", ".jpeg", ".png"), "person": (".jpg", ".jpeg", ".png"),
              "photo": (".jpg", ".jpeg", ".png")}

# ## Configuration


@dataclasses.dataclass
class DataConfig:
    # Each training conversation names new files and classes, and is seen about 5 times: with 6,000
    # seen 20 times the model learned the training names instead of copying (held-out right calls 0.41)
    train_conversations: int = 30000
    validation_conversations: int = 200
    test_requests: int = 100  # held-out requests, the five tools in turn
    # The files the held-out requests name: a folder (searched recursively) per kind, or "synthetic"
    # (noise WAVs and images). They are copied into RUN_DIR/inbox under made-up names, the only
    # folder the agent may read.
    audio_files: str = "synthetic"
    leaf_photos: str = "synthetic"
    person_photos: str = "synthetic"
    photos: str = "synthetic"
    files_per_kind: int = 20
    seed: int = 42

    def validate(self):
        if min(self.train_conversations, self.validation_conversations, self.test_requests, self.files_per_kind) < 1:
            raise UserError("data.train_conversations, validation_conversations, test_requests and files_per_kind >= 1, please.")


@dataclasses.dataclass
class ToolsConfig:
    """A run directory per tool ("" = none: the tool then fails with an error the agent sees)."""

    classify_sound: str = "saved_models/sound-yamnet"
    classify_leaf: str = "saved_models/crop-disease"
    detect_pose: str = "saved_models/pose"
    segment: str = "saved_models/segment-anything"
    generate_image: str = "saved_models/text-to-image"


@dataclasses.dataclass
class ModelConfig:
    preset: str = ""  # "" = the tiny Gemma trained here; or a KerasHub preset (language.PRESETS) used as it is
    vocabulary_size: int = 1500
    sequence_length: int = 464  # the longest training conversation is about 440 tokens
    num_layers: int = 2
    hidden_dim: int = 128
    num_heads: int = 4

    def validate(self):
        if min(self.vocabulary_size, self.sequence_length, self.num_layers, self.hidden_dim, self.num_heads) < 1:
            raise UserError("model sizes must be >= 1.")
        if self.hidden_dim % self.num_heads:
            raise UserError(f"model.hidden_dim = {self.hidden_dim} must be a multiple of model.num_heads = {self.num_heads}.")


@dataclasses.dataclass
class TrainConfig:
    strategy: str = "auto"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 2e-3
    early_stopping_patience: int = 3

    def validate(self):
        if min(self.epochs, self.batch_size, self.early_stopping_patience) < 1 or not self.learning_rate > 0:
            raise UserError("train.epochs, batch_size, early_stopping_patience >= 1 and learning_rate > 0, please.")


@dataclasses.dataclass
class AgentConfig:
    max_steps: int = 4
    max_new_tokens: int = 96
    transcripts_shown: int = 3

    def validate(self):
        if min(self.max_steps, self.max_new_tokens) < 1:
            raise UserError("agent.max_steps and max_new_tokens >= 1, please.")


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tools: ToolsConfig = dataclasses.field(default_factory=ToolsConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    agent: AgentConfig = dataclasses.field(default_factory=AgentConfig)


SMOKE = {
    "data": {"train_conversations": 160, "validation_conversations": 16, "test_requests": 10, "files_per_kind": 3},
    "tools": {name: "" for name in agent_tools.SIGNATURES},
    "model": {"vocabulary_size": 600, "sequence_length": 512, "num_layers": 1, "hidden_dim": 64},  # fewer pieces, longer chats
    "train": {"epochs": 2},
    "agent": {"max_steps": 2, "max_new_tokens": 48, "transcripts_shown": 1},
}

# ## The files the held-out requests name


def stage_request_files(data, inbox, taken_names):
    """Copies `data.files_per_kind` files of each kind into `inbox`/KIND/ under made-up names whose
    stems no training request used. -> {kind: [paths relative to inbox]}."""
    rng = np.random.default_rng(data.seed + 2)
    sources = {"audio": data.audio_files, "leaf": data.leaf_photos, "person": data.person_photos, "photo": data.photos}
    taken = {os.path.splitext(name)[0] for name in taken_names}
    shutil.rmtree(inbox, ignore_errors=True)
    staged = {}
    for kind, source in sources.items():
        if source == "synthetic":
            contents = _synthetic_files(kind, data.files_per_kind, rng)
        else:
            listed = _listed(kind, source)
            contents = [(os.path.splitext(listed[i])[1].lower(), tf.io.read_file(listed[i]).numpy())
                        for i in sorted(rng.permutation(len(listed))[: data.files_per_kind])]
        made_up = tool_requests.random_file_names(4 * len(contents), data.seed + 3)[kind]
        stems = [stem for stem in dict.fromkeys(os.path.splitext(n)[0] for n in made_up) if stem not in taken]
        os.makedirs(os.path.join(inbox, kind), exist_ok=True)
        staged[kind] = []
        for (suffix, content), stem in zip(contents, stems):
            with open(os.path.join(inbox, stem + suffix), "wb") as f:
                f.write(content)
            staged[kind].append(stem + suffix)
    return staged


def _listed(kind, folder):
    if not os.path.isdir(folder):
        raise UserError(f"data: the {kind} folder {folder!r} does not exist.")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(FILE_TYPES[kind]))
    if not files:
        raise UserError(f"data: the {kind} folder {folder!r} has no {'/'.join(FILE_TYPES[kind])} files.")
    return files


def _synthetic_files(kind, count, rng):
    """Noise: [(suffix, bytes)] of one second of 16 kHz audio, or of a 160 px image (boxes fit in 148 px)."""
    if kind == "audio":
        waves = rng.uniform(-0.3, 0.3, (count, 16000, 1)).astype("float32")
        return [(".wav", tf.audio.encode_wav(w, 16000).numpy()) for w in waves]
    return [(".png", tf.io.encode_png(image).numpy()) for image in rng.integers(0, 256, (count, 160, 160, 3), dtype=np.uint8)]


def configured_tools(config, run_dir):
    """-> ({tool: its run directory or ""}, {name: Tool}) of a config's `tools` section."""
    tool_runs = {name: getattr(config.tools, name) for name in agent_tools.SIGNATURES}
    return tool_runs, agent_tools.tools(agent_tools.runners(tool_runs, run_dir))


# ## The small model: a tokenizer and a tiny Gemma, fine-tuned on the model's turns


def conversation_dataset(tokenizer, conversations, tools, sequence_length, batch_size, shuffle_seed=None):
    """Conversations -> batches of ({"token_ids", "padding_mask"}, next tokens, weights on the model's turns)."""
    dataset = tf.data.Dataset.from_tensor_slices(
        language.chat_examples(tokenizer, [c.messages(tools) for c in conversations], sequence_length))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(conversations), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def train_small_model(train_set, validation_set, tools, m, t, seed, stage_dir, strategy):
    """The tokenizer (trained on the training chats, kept in `stage_dir` so a resumed run reuses it)
    and a tiny Gemma fitted with the loss on its own turns only. -> (causal LM, history)."""
    os.makedirs(stage_dir, exist_ok=True)
    proto_path = os.path.join(stage_dir, "tokenizer.model")
    if not os.path.isfile(proto_path):
        texts = [agent_loop.chat_text(c.messages(tools)) for c in train_set]
        train.write_atomically(proto_path, lambda tmp: _write_bytes(tmp, language.train_tokenizer(texts, m.vocabulary_size)))
    with open(proto_path, "rb") as f:
        proto = f.read()
    with train.model_scope(strategy):
        causal_lm = language.tiny_gemma(proto, m.sequence_length, m.num_layers, m.hidden_dim, m.num_heads)
        preprocessor, causal_lm.preprocessor = causal_lm.preprocessor, None  # fitted on token ids
        causal_lm.compile(optimizer=keras.optimizers.AdamW(train.scaled_learning_rate(t.learning_rate, strategy)),
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                          weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    batch_size = train.global_batch_size(t.batch_size, strategy)
    tokenizer = preprocessor.tokenizer
    datasets = [conversation_dataset(tokenizer, conversations, tools, m.sequence_length, batch_size, shuffle)
                for conversations, shuffle in ((train_set, seed), (validation_set, None))]
    history = train.fit_stage(causal_lm, *datasets, t.epochs, stage_dir, t.early_stopping_patience, strategy)
    causal_lm.preprocessor = preprocessor
    return causal_lm, history


def _write_bytes(path, content):
    with open(path, "wb") as f:
        f.write(content)


# ## Measuring


def score(transcript, expected, wanted, tools, folders, tool_has_run):
    """One held-out request's agent run -> {valid, right, end_to_end}. `wanted`: the expected call's
    arguments as the checks resolve them; end_to_end is None where the tool has no run."""
    first = transcript.events[0]
    valid = is_valid_call(first["reply"], tools, folders)

    def expected_call(event):
        return event["kind"] in ("call", "tool_error") and event["tool"] == expected.tool and event["arguments"] == wanted

    right = expected_call(first)
    if not tool_has_run:
        return {"valid": valid, "right": right, "end_to_end": None}
    done = [e for e in transcript.events if expected_call(e) and e["kind"] == "call"]
    end_to_end = (transcript.outcome == "answer" and bool(done)
                  and transcript.answer == tool_requests.answer_for(expected.tool, done[-1]["observation"]["result"]))
    return {"valid": valid, "right": right, "end_to_end": end_to_end}


def is_valid_call(reply, tools, folders):
    """A well-formed tool call: JSON of the call's shape, a known tool, its arguments with their types,
    paths inside the folders. The file need not exist (naming the right one is the "right" rate)."""
    try:
        turn = agent_loop.parse_turn(reply)
        return "tool" in turn and bool(agent_loop.check_call(turn, tools, folders, must_exist=False))
    except agent_loop.CallError:
        return False


def rates(scores, expected):
    """The three rates overall and per tool."""
    def summary(chosen):
        measured = [s["end_to_end"] for s in chosen if s["end_to_end"] is not None]
        return {"count": len(chosen), "valid": float(np.mean([s["valid"] for s in chosen])),
                "right": float(np.mean([s["right"] for s in chosen])),
                "end_to_end": float(np.mean(measured)) if measured else None, "end_to_end_count": len(measured)}

    by_tool = {tool: summary([s for s, c in zip(scores, expected) if c.tool == tool]) for tool in agent_tools.SIGNATURES}
    return {"all": summary(scores), "by_tool": by_tool}


# ## The lesson

MODEL_FILE = "agent_lm.keras"


def run(config, run_dir):
    timings = runs.Timings()
    checkpoints = runs.prepare_run_dir(run_dir, dataclasses.asdict(config))
    keras.utils.set_random_seed(config.data.seed)
    strategy = train.get_strategy(config.train.strategy)
    data, m, t, a = config.data, config.model, config.train, config.agent

    # 1. The tools over the exported runs, and the files held-out requests may name.
    tool_runs, tools = configured_tools(config, run_dir)
    without_run = [name for name, path in tool_runs.items() if not path]
    if without_run:
        print(f"No run configured for {', '.join(without_run)}: the agent sees those tools fail, and their end-to-end "
              "rate is not measured (set tools.NAME to a run directory).")
    with timings("data"):
        train_names = tool_requests.random_file_names(max(1, data.train_conversations // 4), data.seed)
        inbox = os.path.join(run_dir, "inbox")
        staged = stage_request_files(data, inbox, {n for names in train_names.values() for n in names})
        train_set = tool_requests.conversations(data.train_conversations, train_names, False, data.seed)
        validation_set = tool_requests.conversations(
            data.validation_conversations, tool_requests.random_file_names(50, data.seed + 1), False, data.seed + 1)
        test_set = tool_requests.conversations(data.test_requests, staged, True, data.seed + 4)
    print(f"Conversations: {len(train_set)} training, {len(validation_set)} validation; "
          f"{len(test_set)} held-out requests over {sum(map(len, staged.values()))} files in {inbox}.")

    # 2. The model: a preset as it is, or the tiny Gemma fine-tuned on the training conversations.
    history = None
    with timings("train"):
        if m.preset:
            causal_lm = language.from_preset(m.preset)
        else:
            causal_lm, history = train_small_model(train_set, validation_set, tools, m, t, data.seed,
                                                   os.path.join(checkpoints, "lm"), strategy)
    backend = agent_loop.CausalLMBackend(causal_lm, a.max_new_tokens)

    # 3. The agent on every held-out request, with the real tools; transcripts saved and scored.
    transcripts_dir = os.path.join(run_dir, "transcripts")
    shutil.rmtree(transcripts_dir, ignore_errors=True)
    scores, outcomes = [], dict.fromkeys(("call", "answer", "invalid", "tool_error"), 0)
    with timings("agent"):
        for i, expected in enumerate(test_set):
            transcript = agent_loop.run_agent(backend, tools, expected.request, [inbox], a.max_steps)
            transcript.save(os.path.join(transcripts_dir, f"{i:03d}_{expected.tool}"))
            wanted = agent_loop.check_call({"tool": expected.tool, "arguments": expected.arguments}, tools, [inbox])[1]
            scores.append(score(transcript, expected, wanted, tools, [inbox], bool(tool_runs[expected.tool])))
            for event in transcript.events:
                outcomes[event["kind"]] += 1
            if i < a.transcripts_shown:
                print(transcript.text())
    measured = rates(scores, test_set)

    # 4. The fine-tuned model, kept only if it reloads (safe mode) and answers as before.
    exported = None
    if not m.preset:
        with timings("export"):
            exported = keep_model(backend, run_dir, [c.request for c in test_set[:3]], tools)

    report = {
        "lesson": "agent",
        "config": dataclasses.asdict(config),
        "note": _note(config, without_run),
        "distribution": train.describe_strategy(strategy, t.batch_size),
        "model": {"preset": m.preset or None, "parameters": causal_lm.count_params(),
                  "vocabulary_size": causal_lm.preprocessor.tokenizer.vocabulary_size(),
                  "tokens_per_training_conversation": _token_counts(causal_lm, train_set[:50], tools)},
        "data": {"training_conversations": len(train_set), "held_out_requests": len(test_set),
                 "templates_per_tool": {tool: {"training": sum(not held for _, held in tool_requests.templates(tool)),
                                               "held_out": sum(held for _, held in tool_requests.templates(tool))}
                                        for tool in tool_requests.PHRASINGS},
                 "request_files": {kind: len(names) for kind, names in staged.items()}},
        "tools": {name: path or None for name, path in tool_runs.items()},
        "rates": measured,
        "outcomes": outcomes,
        "export": exported,
        "timings_seconds": dict(timings),
    }
    if history:
        viz.plot_training_curves({"tiny Gemma": (1, history)}, os.path.join(run_dir, "training_curves.png"),
                                 "agent: loss and accuracy on the model's turns")
    plot_rates(measured, os.path.join(run_dir, "rates.png"))
    runs.write_report(run_dir, report, summary_markdown(report))
    return report


def keep_model(backend, run_dir, requests, tools):
    """Saves the backend's causal LM (tokenizer inside) to RUN_DIR/agent_lm.keras through a temporary
    file, after checking that the reloaded model writes the same first turn to `requests`; then exports
    its next-token logits (SavedModel and TFLite, checked against Keras on the same chats)."""
    causal_lm, path = backend.causal_lm, os.path.join(run_dir, MODEL_FILE)
    chats = [agent_loop.chat_text([agent_loop.request_message(tools, r)]) for r in requests]
    before = [backend(chat) for chat in chats]

    def save_checked(tmp):
        causal_lm.save(tmp)
        reloaded = agent_loop.CausalLMBackend(keras.saving.load_model(tmp), backend.max_new_tokens)  # safe mode
        after = [reloaded(chat) for chat in chats]
        if after != before:
            raise RuntimeError(f"the reloaded agent model answers differently: {after} != {before}")

    train.write_atomically(path, save_checked)
    return {"keras": {"file": MODEL_FILE, "reloaded_replies_identical": len(requests)},
            **export.export_causal_lm(causal_lm, run_dir, [chat + reply for chat, reply in zip(chats, before)])}


def ask(run_dir, request, folders=()):
    """`tfcourse ask`: the run's agent (its fine-tuned model, or its preset) on one request of yours,
    with the run's tools, reading files only inside `folders` (default: the run's inbox). Prints the
    transcript and saves it to RUN_DIR/asked/. The model and the tools' exports are programs: only
    use runs you trust."""
    from tfcourse.config import load as load_config

    if runs.lesson_of(run_dir) != "agent":
        raise UserError(f"{run_dir!r} is not a finished agent run: `tfcourse run agent --out DIR` writes one.")
    config = load_config(Config, os.path.join(run_dir, "config.yaml"))
    if config.model.preset:
        causal_lm = language.from_preset(config.model.preset)
    else:
        causal_lm = keras.saving.load_model(os.path.join(run_dir, MODEL_FILE))  # safe mode
    _, tools = configured_tools(config, run_dir)
    folders = list(folders) or [os.path.join(run_dir, "inbox")]
    for folder in folders:
        if not os.path.isdir(folder):
            raise UserError(f"--folder {folder!r} is not a folder.")
    backend = agent_loop.CausalLMBackend(causal_lm, config.agent.max_new_tokens)
    transcript = agent_loop.run_agent(backend, tools, request, folders, config.agent.max_steps, echo=True)
    asked = os.path.join(run_dir, "asked")
    os.makedirs(asked, exist_ok=True)
    transcript.save(os.path.join(asked, f"{len(os.listdir(asked)) // 2:04d}"))
    return transcript


def _token_counts(causal_lm, conversations, tools):
    counts = [int(causal_lm.preprocessor.tokenizer(agent_loop.chat_text(c.messages(tools))).shape[0]) for c in conversations]
    return {"mean": float(np.mean(counts)), "max": int(np.max(counts))}


def _note(config, without_run):
    notes = []
    if not config.model.preset:
        notes.append("The language model is a tiny Gemma trained here from random weights on synthetic conversations.")
    synthetic = [f for f in ("audio_files", "leaf_photos", "person_photos", "photos") if getattr(config.data, f) == "synthetic"]
    if synthetic:
        notes.append(f"The held-out requests name noise files ({', '.join(synthetic)} synthetic).")
    if without_run:
        notes.append(f"No tool runs for {', '.join(without_run)}: those tools fail and are not measured end to end.")
    return " ".join(notes)


def plot_rates(measured, path):
    import matplotlib.pyplot as plt

    names = ["all"] + list(measured["by_tool"])
    rows = [measured["all"]] + list(measured["by_tool"].values())
    figure, ax = plt.subplots(figsize=(10, 4))
    width = 0.27
    for k, (key, label) in enumerate((("valid", "valid call"), ("right", "right tool and arguments"),
                                      ("end_to_end", "end to end, real tools"))):
        values = [np.nan if r[key] is None else r[key] for r in rows]
        ax.bar(np.arange(len(names)) + (k - 1) * width, values, width, label=label)
    for bar_level, label in ((0.9, "valid bar"), (0.8, "right bar"), (0.7, "end-to-end bar")):
        ax.axhline(bar_level, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={r['count']})" for n, r in zip(names, rows)], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of held-out requests")
    ax.legend(fontsize=8)
    ax.set_title("The agent on held-out requests (dotted: 0.9 / 0.8 / 0.7)")
    viz.save_figure(figure, path)


def summary_markdown(report):
    lines = ["# agent run", ""]
    if report["note"]:
        lines += [f"**Note.** {report['note']}", ""]
    lines += ["| requests | count | valid call | right tool and arguments | end to end (real tools) |", "|---|---|---|---|---|"]
    for name, r in {"all": report["rates"]["all"], **report["rates"]["by_tool"]}.items():
        end = "not measured" if r["end_to_end"] is None else f"{r['end_to_end']:.3f} (n={r['end_to_end_count']})"
        lines.append(f"| {name} | {r['count']} | {r['valid']:.3f} | {r['right']:.3f} | {end} |")
    lines += ["", f"Turns: {report['outcomes']}", "", f"Model: {report['model']}"]
    return "\n".join(lines) + "\n"
