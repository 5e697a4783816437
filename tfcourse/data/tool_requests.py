"""Synthetic tool-use conversations, to fine-tune a small model into an agent: a request written from
a template, the tool call it asks for, an observation shaped like that tool's real result, and the
answer drawn from the observation.

Held out two ways: by template (see templates(): held-out requests are verb-object pairs and whole
questions that never appear in training) and by argument (held-out requests name files, boxes and
captions that training never saw: the caller gives each split its own files; boxes are drawn from
disjoint sets; held-out captions are real captions of digit-colour pairs training never names,
training captions are the other pairs' and random strings of the captions' words).
"""

import dataclasses
import json

import numpy as np

from tfcourse import UserError, agent_loop, agent_tools
from tfcourse.data import captioned_digits

PHRASINGS = {  # each tool's requests: every verb with every object, and whole questions; see templates()
    "classify_sound": {
        "verbs": ["Classify", "Identify", "Recognise", "Label", "Analyse", "Describe"],
        "objects": ["the sound in {audio}", "the audio clip {audio}", "the recording {audio}",
                    "the noise in the file {audio}", "what is heard in {audio}"],
        "questions": ["{audio}: what kind of sound is this?", "What is making the sound in {audio}?",
                      "Which class does the recording {audio} belong to?", "What do you hear in the clip {audio}?",
                      "Can you tell what the noise in {audio} is?", "{audio} is a recording. What sound is it?",
                      "Name the source of the sound in the file {audio}.", "I recorded {audio}. What do you hear?"],
    },
    "classify_leaf": {
        "verbs": ["Diagnose", "Check", "Classify", "Examine", "Inspect", "Assess"],
        "objects": ["the apple leaf in {image}", "the leaf photo {image}", "the leaf pictured in {image}",
                    "{image} for leaf disease", "the disease on the leaf in {image}"],
        "questions": ["{image} shows an apple leaf: is it sick?", "What disease does the apple leaf in {image} have?",
                      "Is the leaf in {image} healthy?", "Which disease, if any, is on the leaf in {image}?",
                      "Does the leaf photo {image} show a disease?", "{image} is a leaf from my tree. Is it ill?",
                      "My apple tree has a leaf like {image}. What is wrong with it?",
                      "Tell me the condition of the leaf pictured in {image}."],
    },
    "detect_pose": {
        "verbs": ["Detect", "Classify", "Identify", "Name", "Recognise", "Describe"],
        "objects": ["the pose in {image}", "the yoga pose of the person in {image}", "the body pose shown in {image}",
                    "the posture in the photo {image}", "what pose the person in {image} holds"],
        "questions": ["{image}: which pose is this?", "Which yoga pose is the person in {image} doing?",
                      "What pose is shown in the photo {image}?", "What yoga pose does {image} show?",
                      "How is the person in {image} posing?", "{image} shows someone exercising. Which pose?",
                      "Is the person in {image} doing a yoga pose? Which one?",
                      "Identify the posture of the person in {image}."],
    },
    "segment": {
        "verbs": ["Segment", "Mask", "Outline", "Cut out", "Separate", "Make a mask of"],
        "objects": ["the object inside {box} in {image}", "what is inside the box {box} of {image}",
                    "the thing at {box} in the photo {image}", "the region {box} of {image}", "{image} within the box {box}"],
        "questions": ["{image}: can you mask the object within {box}?", "What does the object in box {box} of {image} cover?",
                      "Which part of {image} is the object in {box}?", "Can I get a mask for {box} in {image}?",
                      "How much of {image} does the thing in {box} fill?", "{image} has something at {box}. What is its mask?",
                      "Which pixels of {image} belong to the object boxed by {box}?",
                      "Separate the object in box {box} from the background of {image}."],
    },
    "generate_image": {
        "verbs": ["Draw", "Generate", "Make", "Create", "Paint", "Render"],
        "objects": ["an image of {caption}", "a picture of {caption}", "{caption}", "a drawing of {caption}",
                    "an image showing {caption}"],
        "questions": ["{caption}: can you draw this?", "Could I have a picture of {caption}?",
                      "Can you make an image of {caption}?", "Would you draw {caption} for me?",
                      "What would {caption} look like? Draw it.", "{caption} is what I want to see. Can you paint it?",
                      "Can you produce an image of {caption}?", "I would like a picture with {caption}."],
    },
}
HELD_OUT_QUESTIONS = 2  # the last questions of each tool are held out whole
IMPERATIVE_LEAD_INS = ["", "Please ", "Could you ", "I need you to ", "Go ahead and "]
QUESTION_LEAD_INS = ["", "Quick question: ", "Hi! ", "Hello. "]
CLOSINGS = ["", " Thanks.", " Thank you!", " Keep it short.", " Answer in one sentence."]


def templates(tool):
    """[(template, held out)] of a tool: each verb with each object ("Classify the recording {audio}"),
    held out where (verb + object) % 5 == 0, so every verb and every object is in training but those
    pairs never are; then the questions, the last HELD_OUT_QUESTIONS held out whole."""
    phrasing = PHRASINGS[tool]
    out = [(f"{verb} {obj}", (v + o) % 5 == 0) for v, verb in enumerate(phrasing["verbs"])
           for o, obj in enumerate(phrasing["objects"])]
    questions = phrasing["questions"]
    return out + [(q, i >= len(questions) - HELD_OUT_QUESTIONS) for i, q in enumerate(questions)]


def phrase(template, rng):
    """A template as somebody would type it: an imperative with a lead-in ("Could you segment ...?"),
    a question with a greeting, either with a closing; the same choices in both splits."""
    if template.endswith(("?", ".")):
        text = str(rng.choice(QUESTION_LEAD_INS)) + template
    else:
        lead_in = str(rng.choice(IMPERATIVE_LEAD_INS))
        text = lead_in + (template[0].lower() + template[1:] if lead_in and not template.startswith("{") else template)
        text += "?" if lead_in == "Could you " else "."
    return text + str(rng.choice(CLOSINGS))


FILE_KINDS = {"classify_sound": "audio", "classify_leaf": "leaf", "detect_pose": "person", "segment": "photo"}
ANSWERS = {  # every value is copied from the observation as written there
    "classify_sound": "The sound is most likely {top} (probability {probability}).",
    "classify_leaf": "The leaf most likely shows {top} (probability {probability}).",
    "detect_pose": "The pose is most likely {top} (probability {probability}).",
    "segment": "The mask covers a fraction {mask_fraction} of the image: {mask_png}.",
    "generate_image": "Here is the image: {image_png}.",
}


CLASS_NAME_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"  # real ones: "dog", "Apple___Black_rot"


@dataclasses.dataclass
class Conversation:
    request: str
    tool: str
    arguments: dict  # as the model should write them
    observation: dict  # shaped like the tool's result
    answer: str
    template: int

    def messages(self, tools):
        """The chat the model is trained on: the request (after the system prompt), the call, the observation, the answer."""
        call = json.dumps({"tool": self.tool, "arguments": self.arguments})
        return [agent_loop.request_message(tools, self.request),
                {"role": "model", "content": call},
                {"role": "user", "content": "Observation: " + json.dumps({"result": self.observation})},
                {"role": "model", "content": json.dumps({"answer": self.answer})}]


def answer_for(tool, result):
    """The final answer the agent gives from a tool's result (the same words for real tools)."""
    if "top_k" in result:
        best = result["top_k"][0]
        return ANSWERS[tool].format(top=best["class"], probability=best["probability"])
    return ANSWERS[tool].format(**result)


def conversations(count, files, held_out, seed):
    """`count` conversations over the five tools in turn, about `files` {kind: [paths]} (the kinds in
    FILE_KINDS); `held_out` picks the held-out templates, boxes and captions instead of the training ones."""
    rng = np.random.default_rng(seed)
    for kind in FILE_KINDS.values():
        if not files.get(kind):
            raise UserError(f"no {kind} files to write requests about.")
    captions = split_captions(held_out)
    tool_templates = {tool: templates(tool) for tool in PHRASINGS}
    chosen = {tool: [t for t, (_, held) in enumerate(texts) if held == held_out] for tool, texts in tool_templates.items()}
    out = []
    for i in range(count):
        tool = list(PHRASINGS)[i % len(PHRASINGS)]
        template = int(rng.choice(chosen[tool]))
        arguments, fill = {}, {}
        if tool in FILE_KINDS:
            path = str(rng.choice(files[FILE_KINDS[tool]]))
            name = "audio" if tool == "classify_sound" else "image"
            arguments[name] = fill[name] = path
        if tool == "segment":
            arguments["box"] = random_box(rng, held_out)
            fill["box"] = json.dumps(arguments["box"])
        if tool == "generate_image":
            caption = str(rng.choice(captions)) if held_out or rng.random() < 0.5 else random_caption(rng)
            arguments["caption"] = fill["caption"] = caption
        observation = fake_observation(tool, arguments, rng)
        out.append(Conversation(phrase(tool_templates[tool][template][0], rng).format(**fill), tool, arguments, observation,
                                answer_for(tool, observation), template))
    return out


def random_file_names(count, seed):
    """{kind: `count` made-up paths}: random letters and digits, and a random extension, so the model
    can only get a file argument right by copying it from the request, not by recalling it."""
    rng = np.random.default_rng(seed)
    extensions = {"audio": ["wav"]}
    return {kind: [f"{kind}/{random_word(rng)}.{rng.choice(extensions.get(kind, ['jpg', 'jpeg', 'png']))}" for _ in range(count)]
            for kind in FILE_KINDS.values()}


def random_caption(rng):
    """3-7 words of the captions' vocabulary in any order (never a held-out caption): training
    captions the model must copy word by word."""
    while (caption := " ".join(rng.choice(captioned_digits.VOCABULARY, int(rng.integers(3, 8))))) in split_captions(True):
        pass
    return caption


def random_word(rng, letters="abcdefghijklmnopqrstuvwxyz0123456789_-", longest=11):
    return "".join(rng.choice(list(letters), int(rng.integers(3, longest + 1))))


def random_box(rng, held_out):
    """[x0, y0, x1, y1] in whole pixels, inside 148 x 148 (so inside any photo at least that big).
    Held-out boxes are those whose coordinates sum to a multiple of 5: no box is in both splits,
    and both have every digit in every place."""
    while True:
        x0, y0 = (int(v) for v in rng.integers(0, 60, 2))
        box = [x0, y0] + [int(v) for v in (x0, y0) + rng.integers(20, 89, 2)]
        if (sum(box) % 5 == 0) == held_out:
            return box


def random_class_name(rng):
    """A made-up class name: random letters, or made-up words joined as real names are ("dog",
    "crying_baby", "Apple___Apple_scab": a word may come back)."""
    if rng.random() < 0.3:
        return random_word(rng, CLASS_NAME_LETTERS, longest=26)
    words = [pronounceable_word(rng) if rng.random() < 0.5 else random_word(rng, "abcdefghijklmnopqrstuvwxyz", longest=9)
             for _ in range(int(rng.integers(1, 4)))]
    if len(words) > 1 and rng.random() < 0.5:
        words[-1] = words[0]
    if rng.random() < 0.3:
        words = [w.capitalize() for w in words]
    return str(rng.choice(["_", "___", "-"])).join(words)


ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "ch", "cr", "pl", "sh", "st", "tr"]
VOWELS = ["a", "e", "i", "o", "u", "y", "ea", "ee", "oo", "ou"]
CODAS = ["", "", "", "ck", "l", "n", "ng", "r", "s", "t"]


def pronounceable_word(rng):
    """A made-up word of 1-3 syllables ("shoolen", "brat"): real class names are words ("rooster",
    "cobra"), which the tokenizer writes in the pieces of its commoner words, and the model must
    learn to copy those pieces too, not only the odd ones of random letters (a run trained on random
    letters alone wrote "cobra" as "cvdra" and "tree" as "tme")."""
    return "".join(str(rng.choice(ONSETS)) + str(rng.choice(VOWELS)) + str(rng.choice(CODAS))
                   for _ in range(int(rng.integers(1, 4))))


def split_captions(held_out):
    """The captioned-digit captions; a quarter of the (digit, colour) pairs are held out: one colour
    of each digit, two or three digits of each colour."""
    chosen = []
    for digit in range(10):
        for c, colour in enumerate(captioned_digits.COLOURS):
            if ((digit + c) % 4 == 0) == held_out:
                chosen += [captioned_digits.caption(digit, c, side) for side in (0, 1)]
    return chosen


def fake_observation(tool, arguments, rng):
    """A result shaped like the real tool's (agent_tools.runners), with made-up values: made-up class
    names too, so the answer can only be right by copying it from the observation."""
    if tool in ("classify_sound", "classify_leaf", "detect_pose"):
        concentration = 0.5 if rng.random() < 0.5 else 0.02  # a sure classifier's top_k reads 1.0, 0.0, 0.0
        probabilities = np.sort(rng.dirichlet(np.ones(agent_tools.TOP_K) * concentration))[::-1]
        return {"top_k": [{"class": random_class_name(rng), "probability": round(float(p), 4)} for p in probabilities]}
    if tool == "segment":  # as segment_anything.segment_files names its masks
        stem = arguments["image"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return {"mask_fraction": round(float(rng.uniform(0.01, 0.6)), 4), "mask_png": f"outputs/{stem}.mask.png"}
    # as text_to_image.draw_files: the file, and what the run's judge sees in it
    return {"image_png": f"outputs/{arguments['caption'].replace(' ', '_')}-0-0.png",
            "judge_sees": str(rng.choice(split_captions(False) + split_captions(True)))}
