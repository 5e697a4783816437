"""The agent's five tools: what the model is told about them. Each wraps a run directory the course
exported (see tfcourse.lessons.agent for what runs them)."""

from tfcourse.agent_loop import Argument, Tool

SIGNATURES = {
    "classify_sound": ("The sound class of a 16 kHz WAV recording (YAMNet transfer).",
                       (Argument("audio", "file", "the WAV file"),)),
    "classify_leaf": ("The disease, or healthy, of an apple leaf photo (crop-disease model).",
                      (Argument("image", "file", "the leaf photo"),)),
    "detect_pose": ("The yoga pose of the person in a photo (MoveNet keypoints and a classifier).",
                    (Argument("image", "file", "the photo of a person"),)),
    "segment": ("The mask of the object inside a box in a photo (Segment Anything).",
                (Argument("image", "file", "the photo"), Argument("box", "box", "around the object"))),
    "generate_image": ("An image drawn from a caption such as 'a red seven on the left' (text-to-image model).",
                       (Argument("caption", "text", "what to draw"),)),
}


def tools(runners):
    """{name: Tool} for the tools in `runners` {name: run(**arguments) -> result}."""
    return {name: Tool(name, *SIGNATURES[name], run) for name, run in runners.items()}
