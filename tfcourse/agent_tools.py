"""The agent's five tools: what the model is told about them, and what runs them. Each wraps a run
directory another lesson exported, through the same functions as `tfcourse predict`: exported
models are programs, so only point the agent at runs you trust."""

import os

from tfcourse import UserError, runs
from tfcourse.agent_loop import Argument, Tool

SIGNATURES = {
    "classify_sound": ("the sound class of a WAV recording.", (Argument("audio", "file"),)),
    "classify_leaf": ("the disease, or healthy, of an apple leaf photo.", (Argument("image", "file"),)),
    "detect_pose": ("the yoga pose of the person in a photo.", (Argument("image", "file"),)),
    "segment": ("the mask of the object inside a box in a photo.", (Argument("image", "file"), Argument("box", "box"))),
    "generate_image": ("an image drawn from a caption such as 'a red seven on the left'.", (Argument("caption", "text"),)),
}
LESSON_OF_TOOL = {"classify_sound": "sound-yamnet", "classify_leaf": "crop-disease", "detect_pose": "pose",
                  "segment": "segment-anything", "generate_image": "text-to-image"}
OUTPUTS = "outputs"  # the folder, in the agent's run directory, where tools write their files
TOP_K = 3


def tools(runners):
    """{name: Tool} for every tool in SIGNATURES; `runners` {name: run(**arguments) -> result}."""
    return {name: Tool(name, *SIGNATURES[name], runners[name]) for name in SIGNATURES}


def runners(runs, run_dir):
    """{tool: run(**arguments) -> result} over the exported runs `runs` {tool: run directory}; a
    tool without a run (empty path) fails with a message saying how to give it one. Files the
    tools write go to RUN_DIR/outputs, named in results relative to RUN_DIR."""
    from tfcourse import cli
    from tfcourse.lessons import text_to_image

    out_dir = os.path.join(run_dir, OUTPUTS)
    for tool, path in runs.items():
        if path:
            check_run(tool, path)

    def shown(path):  # a tool's file as the model sees it: short, inside the run directory
        return os.path.join(OUTPUTS, os.path.basename(path))

    def classifier(tool):
        def run(**arguments):
            (path,) = arguments.values()
            top_k = cli.predict_files(_run_of(runs, tool), [path], top_k=TOP_K)[0]["top_k"]
            return {"top_k": [{"class": k["class"], "probability": round(k["probability"], 4)} for k in top_k]}
        return run

    def segment(image, box):
        result = cli.predict_files(_run_of(runs, "segment"), [image], box=box, out_dir=out_dir)[0]
        return {"mask_fraction": result["mask_fraction"], "mask_png": shown(result["mask_png"])}

    def generate_image(caption):
        result = text_to_image.draw_files(_run_of(runs, "generate_image"), [caption], out_dir=out_dir)[0]
        return {"image_png": shown(result["image_png"]), "judge_sees": result["judge_sees"]}

    return {"classify_sound": classifier("classify_sound"), "classify_leaf": classifier("classify_leaf"),
            "detect_pose": classifier("detect_pose"), "segment": segment, "generate_image": generate_image}


def check_run(tool, path):
    """A tool's run must be a finished run of the lesson that tool wraps."""
    lesson, written_by = LESSON_OF_TOOL[tool], runs.lesson_of(path)
    if written_by is None:
        raise UserError(f"tools.{tool} = {path!r} is not a finished run (no readable report.json); make one with "
                        f"`tfcourse run {lesson} --out {path}`.")
    if written_by != lesson:
        raise UserError(f"tools.{tool} = {path!r} is a {written_by} run; {tool} needs a {lesson} run.")


def _run_of(runs, tool):
    if not runs.get(tool):
        raise UserError(f"no run is configured for {tool}: set tools.{tool} to a {LESSON_OF_TOOL[tool]} run directory.")
    return runs[tool]
