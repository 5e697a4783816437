"""A tool-using agent: a language model answers each turn with one JSON object, and the loop runs it.

The system prompt lists the tools and their typed arguments. Each model turn is either a tool call,
{"tool": NAME, "arguments": {...}}, or the end, {"answer": TEXT}. The loop checks a call against the
tool's signature (file paths must stay inside the allowed folders) before running it, and sends
back an observation: the tool's result, or an error the model can act on. Nothing the model or a
tool does wrong ends the loop: a malformed call, an unknown tool, a bad argument and a tool failure
are all observations, kept in the transcript. A step limit bounds it.

The turns use Gemma's chat format (the system prompt opens the first user turn, as Gemma has no
system role), so a KerasHub Gemma instruct preset and the course's small model read the same text.

Hugging Face's Transformers Agents and KerasHub have no tool-use loop for Keras models, so this one
is written here; the language models are KerasHub's.
"""

import dataclasses
import json
import math
import os
import typing

from tfcourse import UserError, train

START_TURN, END_TURN = "<start_of_turn>", "<end_of_turn>"
ARGUMENT_TYPES = {
    "file": "a file's path, as the request writes it",
    "text": "a non-empty string",
    "box": "[x0, y0, x1, y1], pixels, x0 < x1 and y0 < y1",
}
TOOL_ERRORS = (UserError, OSError, ValueError)  # a tool that fails with one of these reports it; others are bugs


@dataclasses.dataclass(frozen=True)
class Argument:
    name: str
    type: typing.Literal[tuple(ARGUMENT_TYPES)]


@dataclasses.dataclass(frozen=True)
class Tool:
    """`run(**arguments)` -> a JSON-serialisable result; file arguments arrive as checked absolute paths."""

    name: str
    description: str
    arguments: tuple
    run: typing.Callable


class CallError(ValueError):
    """A model turn that is not a valid call or answer; its message is the observation the model gets."""


# ## The prompt


def system_prompt(tools):
    """The tools, each with its typed arguments, and the reply format. Short: a small model reads it
    at every step."""
    lines = ['Reply with one JSON object per turn: {"tool": NAME, "arguments": {...}} to call a tool, '
             'or {"answer": TEXT} to finish. The tools:']
    for tool in tools.values():
        arguments = ", ".join(f"{a.name}: {a.type}" for a in tool.arguments)
        lines.append(f"- {tool.name}({arguments}): {tool.description}")
    used = dict.fromkeys(a.type for tool in tools.values() for a in tool.arguments)
    lines.append("Types: " + "; ".join(f"{kind} = {ARGUMENT_TYPES[kind]}" for kind in used) + ".")
    return "\n".join(lines)


def request_message(tools, request):
    """The first user turn: the system prompt (Gemma has no system role), then the request."""
    return {"role": "user", "content": f"{system_prompt(tools)}\n\n{request}"}


def chat_text(messages):
    """Messages [{"role": "user" | "model", "content"}] -> Gemma's chat text, ending with an open model turn."""
    turns = [f"{START_TURN}{m['role']}\n{m['content']}{END_TURN}\n" for m in messages]
    return "".join(turns) + f"{START_TURN}model\n"


# ## Checking a model turn


def parse_turn(text):
    """A model turn -> {"tool", "arguments"} or {"answer"}; CallError says what is wrong with it."""
    text = text.strip()
    if text.endswith(END_TURN):
        text = text[: -len(END_TURN)].strip()
    try:
        turn = json.loads(text)
    except json.JSONDecodeError as error:
        raise CallError(f"the reply is not JSON ({error.msg} at character {error.pos}); reply with one JSON object.")
    if not isinstance(turn, dict):
        raise CallError("the reply is JSON but not an object; reply with {\"tool\": ..., \"arguments\": ...} or {\"answer\": ...}.")
    if set(turn) == {"answer"} and isinstance(turn["answer"], str):
        return turn
    if set(turn) == {"tool", "arguments"} and isinstance(turn["tool"], str) and isinstance(turn["arguments"], dict):
        return turn
    raise CallError(f"the reply has the keys {sorted(turn)}; a tool call has exactly \"tool\" (a name) and "
                    "\"arguments\" (an object), an answer exactly \"answer\" (a string).")


def check_call(turn, tools, folders, must_exist=True):
    """A parsed tool call -> (tool, arguments ready to run); CallError names the first problem.
    `must_exist=False` checks the call's form only: a file argument may name a missing file."""
    tool = tools.get(turn["tool"])
    if tool is None:
        raise CallError(f"there is no tool {turn['tool']!r}; the tools are {', '.join(tools)}.")
    expected = [a.name for a in tool.arguments]
    given = turn["arguments"]
    missing, unknown = [n for n in expected if n not in given], [n for n in given if n not in expected]
    if missing or unknown:
        raise CallError(f"{tool.name} takes the arguments {expected}; missing {missing}, unknown {unknown}.")
    return tool, {a.name: check_argument(tool.name, a, given[a.name], folders, must_exist) for a in tool.arguments}


def check_argument(tool_name, argument, value, folders, must_exist=True):
    where = f"{tool_name}'s argument {argument.name!r}"
    if argument.type == "box":
        if (not isinstance(value, list) or len(value) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
            raise CallError(f"{where} must be {ARGUMENT_TYPES['box']}; it is {value!r}.")
        if not (value[0] < value[2] and value[1] < value[3]):
            raise CallError(f"{where} = {value}: x0 < x1 and y0 < y1, please.")
        return [float(v) for v in value]
    if not isinstance(value, str) or not value.strip():
        raise CallError(f"{where} must be {ARGUMENT_TYPES[argument.type]}; it is {value!r}.")
    return confined_path(value, folders, where, must_exist) if argument.type == "file" else value


def confined_path(path, folders, where="the path", must_exist=True):
    """`path` (relative to the first allowed folder, or absolute) -> its real absolute path, which must
    be an existing file inside one of `folders`. ".." is refused outright, and links are followed
    before the check, so neither can lead outside."""
    if ".." in path.replace("\\", "/").split("/"):
        raise CallError(f"{where} = {path!r}: '..' is not allowed in paths.")
    roots = [os.path.realpath(folder) for folder in folders]
    full = os.path.realpath(os.path.join(roots[0], path))  # an absolute `path` replaces the folder
    if not any(os.path.commonpath([full, root]) == root for root in roots):
        raise CallError(f"{where} = {path!r} is outside the allowed folders.")
    if must_exist and not os.path.isfile(full):
        raise CallError(f"{where} = {path!r}: no such file in the allowed folders.")
    return full


# ## The loop


@dataclasses.dataclass
class Transcript:
    request: str
    messages: list  # the chat the model saw and wrote: {"role", "content"}
    events: list  # per step: {"step", "reply", "kind": call | answer | invalid | tool_error, ...}
    answer: typing.Optional[str] = None
    outcome: str = "step_limit"  # "answer" when the model finished

    def text(self):
        lines = [f"request: {self.request}"]
        for e in self.events:
            lines.append(f"[{e['step']}] model: {e['reply'].strip()}")
            if "observation" in e:
                lines.append(f"[{e['step']}] {e['kind']}: {json.dumps(e['observation'])}")
        lines.append(f"outcome: {self.outcome}" + (f": {self.answer}" if self.answer is not None else ""))
        return "\n".join(lines) + "\n"

    def save(self, path):
        """`path`.json (everything) and `path`.txt (for reading), each written whole or not at all."""
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        train.write_atomically(path + ".json", lambda tmp: _write(tmp, json.dumps(dataclasses.asdict(self), indent=2)))
        train.write_atomically(path + ".txt", lambda tmp: _write(tmp, self.text()))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def run_agent(complete, tools, request, folders, max_steps=4, echo=False):
    """`complete(chat text) -> the model's turn`; `tools` {name: Tool}; -> the Transcript.

    Each step: the model's turn; a valid call runs and its result is the observation; an invalid
    turn or a failing tool gives an error observation instead, and the model may try again."""
    if max_steps < 1:
        raise UserError(f"max_steps = {max_steps}: at least 1.")
    messages = [request_message(tools, request)]
    transcript = Transcript(request, messages, [])
    for step in range(1, max_steps + 1):
        reply = complete(chat_text(messages))
        messages.append({"role": "model", "content": reply.strip()})
        event = {"step": step, "reply": reply}
        try:
            turn = parse_turn(reply)
            if "answer" in turn:
                transcript.events.append({**event, "kind": "answer"})
                transcript.answer, transcript.outcome = turn["answer"], "answer"
                break
            tool, arguments = check_call(turn, tools, folders)
        except CallError as error:
            event.update(kind="invalid", observation={"error": str(error)})
        else:
            try:
                event.update(kind="call", tool=tool.name, arguments=arguments,
                             observation={"result": tool.run(**arguments)})
            except TOOL_ERRORS as error:
                event.update(kind="tool_error", tool=tool.name, arguments=arguments,
                             observation={"error": f"{tool.name} failed: {error}"})
        transcript.events.append(event)
        messages.append({"role": "user", "content": "Observation: " + json.dumps(event["observation"])})
        if echo:
            print(f"[{step}] {reply.strip()}\n    -> {json.dumps(event['observation'])[:300]}", flush=True)
    return transcript


class ScriptedBackend:
    """Replies from a fixed list, in order: the loop's unit tests only (it reads no prompt)."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def __call__(self, chat):
        self.prompts.append(chat)
        if not self.replies:
            raise AssertionError("the scripted backend ran out of replies")
        return self.replies.pop(0)


class CausalLMBackend:
    """A KerasHub CausalLM as the agent's model: a Gemma instruct preset, or the course's small model.
    Greedy decoding, stopped at the end of the model's turn. The generation length is rounded up to
    a multiple of LENGTH_STEP, so chats of similar lengths share one traced generate function: the
    reply has room for at least `max_new_tokens`."""

    LENGTH_STEP = 128

    def __init__(self, causal_lm, max_new_tokens=96):
        self.causal_lm, self.max_new_tokens = causal_lm, max_new_tokens
        tokenizer = causal_lm.preprocessor.tokenizer
        self.tokenizer, self.end_of_turn = tokenizer, tokenizer.token_to_id(END_TURN)
        causal_lm.compile(sampler="greedy")

    def __call__(self, chat):
        prompt_length = int(self.tokenizer(chat).shape[0]) + 1  # + the start token
        max_length = -(-(prompt_length + self.max_new_tokens) // self.LENGTH_STEP) * self.LENGTH_STEP
        reply = self.causal_lm.generate(chat, max_length=max_length, stop_token_ids=[self.end_of_turn], strip_prompt=True)
        return reply.split(END_TURN, 1)[0].strip()
