"""The `tfcourse` command: list, run, evaluate, predict, explain, bench and ask.

    tfcourse list
    tfcourse run LESSON [--config FILE] [--set key=value ...] [--smoke] [--out DIR]
    tfcourse evaluate RUN_DIR --data PATH [--format saved_model|tflite|tflite-dynamic|tflite-int8]
    tfcourse predict RUN_DIR FILE... [--top-k K] [--format ...]
    tfcourse predict SEGMENT_ANYTHING_RUN IMAGE... (--box X0,Y0,X1,Y1 | --point X,Y[,LABEL] ...) [--out DIR]
    tfcourse explain RUN_DIR IMAGE... [--out DIR] [--layers NAME ...] [--methods vanilla smoothgrad gradcam]
    tfcourse bench [--config FILE] [--set key=value ...] [--smoke] [--out DIR]
    tfcourse ask AGENT_RUN "REQUEST" [--folder DIR ...]

Bad input exits with status 2 and a one-paragraph message naming what was wrong.
"""

import argparse
import json
import os
import sys

import numpy as np

from tfcourse import ExportCheckFailed, UserError
from tfcourse.lessons import LESSONS


def _parser():
    parser = argparse.ArgumentParser(prog="tfcourse", description="Hands-on transfer-learning lessons in Keras.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="list the lessons")

    run = commands.add_parser("run", help="train, evaluate and export a lesson")
    run.add_argument("lesson", choices=sorted(LESSONS))
    run.add_argument("--config", help="YAML file of overrides of the lesson's defaults")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="a dotted override, e.g. --set train.feature_epochs=3 (repeatable)")
    run.add_argument("--smoke", action="store_true", help="synthetic data and a tiny model: minutes on a CPU")
    run.add_argument("--out", help="run directory (default: saved_models/LESSON, or LESSON-smoke)")

    trust = "A SavedModel is a program: only load run directories you trust."
    formats = "saved_model (default), tflite, tflite-dynamic or tflite-int8"
    evaluate = commands.add_parser("evaluate", help="evaluate a run's exported model on a folder of class folders",
                                   description=trust)
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", required=True, help="a folder with one sub-folder per class")
    evaluate.add_argument("--format", default="saved_model", help=formats)

    predict = commands.add_parser("predict", help="top-k classes of image files with a run's exported model",
                                  description=trust)
    predict.add_argument("run_dir")
    predict.add_argument("files", nargs="+")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--format", default="saved_model", help=formats)
    predict.add_argument("--box", type=_numbers(4), metavar="X0,Y0,X1,Y1",
                         help="segment-anything runs: a box prompt, in the image's pixels")
    predict.add_argument("--point", dest="points", type=_numbers(2, 3), action="append", default=[], metavar="X,Y[,LABEL]",
                         help="segment-anything runs: a point prompt (label 1 object, the default; 0 background); repeatable")
    predict.add_argument("--out", help="segment-anything runs: where the mask PNGs go (default: RUN_DIR/predictions)")

    explain = commands.add_parser(
        "explain", help="saliency, SmoothGrad, Grad-CAM and activation grids of a run's Keras model, as PNGs",
        description="Reads the run's .keras model in Keras' safe mode. Only explain run directories you trust.")
    explain.add_argument("run_dir", help="a run directory of an image lesson, or a .keras file")
    explain.add_argument("images", nargs="+", help="image files or folders of them")
    explain.add_argument("--out", help="where the PNGs go (default: RUN_DIR/explanations)")
    explain.add_argument("--layers", nargs="*", default=[], help="layers to draw activation grids of (names or paths)")
    explain.add_argument("--methods", nargs="+", default=["vanilla", "smoothgrad", "gradcam"])
    explain.add_argument("--gradcam-layer", help="default: the last 4-D feature map before global pooling")
    explain.add_argument("--smoothgrad-samples", type=int, default=25)
    explain.add_argument("--smoothgrad-noise", type=float, default=0.15)

    bench = commands.add_parser(
        "bench", help="measure the crop-disease model: input pipeline, embedding cache, inference, FLOP/s, scaling",
        description="Takes crop-disease's config (--config/--set, plus bench.* settings); writes bench.json and bench.md.")
    bench.add_argument("--config", help="YAML file of overrides of crop-disease's defaults")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a dotted override, e.g. --set bench.latency_calls=50 (repeatable)")
    bench.add_argument("--smoke", action="store_true", help="synthetic images and a tiny random model")
    bench.add_argument("--out", help="where bench.json and bench.md go (default: saved_models/bench)")
    ask = commands.add_parser(
        "ask", help="ask an agent run's model a request; it calls the run's tools",
        description="Loads the run's language model (safe mode) and its tools' exports: only use runs you trust.")
    ask.add_argument("run_dir", help="a directory written by `tfcourse run agent`")
    ask.add_argument("request", help='e.g. "Is the leaf in leaf/my_photo.jpg healthy?"')
    ask.add_argument("--folder", dest="folders", action="append", default=[],
                     help="a folder the agent may read files from (repeatable; default: RUN_DIR/inbox); "
                          "paths in the request are relative to the first")
    return parser


def _numbers(*counts):
    """An argparse type: comma-separated numbers, as many as one of `counts` (a point's label defaults to 1)."""
    def parse(text):
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in counts:
            raise argparse.ArgumentTypeError(f"{text!r} is not {' or '.join(map(str, counts))} comma-separated numbers")
        return tuple(values) + (1.0,) * (max(counts) - len(values))
    return parse


def main(argv=None):
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if args.command == "list":
            width = max(map(len, LESSONS))
            for name, (_, description) in sorted(LESSONS.items()):
                print(f"{name:<{width}}  {description}")
        elif args.command == "run":
            run_lesson(args)
        elif args.command == "evaluate":
            print(json.dumps(evaluate_run(args.run_dir, args.data, args.format), indent=2))
        elif args.command == "predict":
            print(json.dumps(predict_files(args.run_dir, args.files, args.top_k, args.format, args.box, args.points,
                                           args.out), indent=2))
        elif args.command == "explain":
            explain_run(args)
        elif args.command == "bench":
            run_bench(args)
        elif args.command == "ask":
            from tfcourse.lessons import agent

            transcript = agent.ask(args.run_dir, args.request, args.folders)
            print(transcript.answer if transcript.outcome == "answer" else f"No answer within {len(transcript.events)} steps.")
    except UserError as error:
        print(f"tfcourse {args.command}: {error}", file=sys.stderr)
        return 2
    except ExportCheckFailed as error:  # not bad input: the trained model failed its export check
        print(f"tfcourse {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


def run_lesson(args):
    from tfcourse import config as config_lib
    from tfcourse import train
    from tfcourse.lessons import load_lesson

    train.split_cpu()  # before TensorFlow starts
    lesson = load_lesson(args.lesson)
    config = config_lib.load(lesson.Config, args.config, args.overrides, base=lesson.SMOKE if args.smoke else None)
    run_dir = args.out or os.path.join("saved_models", args.lesson + ("-smoke" if args.smoke else ""))
    worker = train.non_chief_task()
    if worker:  # a multi-worker run: only the chief writes the run directory
        run_dir = os.path.join(run_dir, "workers", worker)
    lesson.run(config, run_dir)
    print(f"Run directory: {os.path.abspath(run_dir)}")


def run_bench(args):
    from tfcourse import bench
    from tfcourse import config as config_lib

    config = config_lib.load(bench.Config, args.config, args.overrides, base=bench.SMOKE if args.smoke else None)
    out_dir = args.out or os.path.join("saved_models", "bench-smoke" if args.smoke else "bench")
    bench.run(config, out_dir)
    print(f"bench.json and bench.md written to {os.path.abspath(out_dir)}")


def explain_run(args):
    from tfcourse import explain

    summary = explain.explain_files(args.run_dir, args.images, args.out, args.methods, args.layers,
                                    args.gradcam_layer, args.smoothgrad_samples, args.smoothgrad_noise)
    print(f"PNGs written to {os.path.abspath(summary['out_dir'])}")
    print(json.dumps(summary, indent=2))


def evaluate_run(run_dir, data_path, fmt):
    """Metrics of a run's exported model on another folder with the same classes."""
    from tfcourse import metrics
    from tfcourse.data import images
    from tfcourse.export import load_exported, predict_batches

    lesson = _lesson_of_run(run_dir)
    if hasattr(lesson, "predict_files") or hasattr(lesson, "segment_files"):
        raise UserError(f"{run_dir!r} is a {lesson.__name__.rsplit('.', 1)[-1]} run: its export is not an image "
                        "classifier, so `evaluate` cannot score it; its own report.json holds its test metrics.")
    predict, image_size, class_names = load_exported(run_dir, fmt)
    folder = images.scan_image_folder(data_path)
    unknown = sorted(set(folder.class_names) - set(class_names))
    if unknown:
        raise UserError(
            f"--data {data_path!r} has class folders the model does not know: {unknown}. "
            f"The model's classes: {class_names}."
        )
    labels = np.asarray([class_names.index(folder.class_names[label]) for label in folder.labels])
    pairs = images.folder_split(folder, np.arange(len(folder.files)), image_size)
    batched = images.image_dataset(pairs, 32, training=False, seed=0)
    pixels, _ = images.load_array(batched)
    probabilities = predict_batches(predict, pixels)
    report = metrics.classification_report(labels, probabilities.argmax(-1), class_names)
    return {**report, "format": fmt, "data": data_path, "num_skipped": len(folder.skipped), "skipped": folder.skipped}


def _lesson_of_run(run_dir):
    """The lesson module that wrote `run_dir`'s report.json, or None."""
    from tfcourse.lessons import load_lesson
    from tfcourse.runs import lesson_of

    name = lesson_of(run_dir)
    return load_lesson(name) if name in LESSONS else None


def predict_files(run_dir, files, top_k=3, fmt="saved_model", box=None, points=(), out_dir=None):
    from tfcourse.data import images
    from tfcourse.export import load_exported, top_k_classes

    lesson = _lesson_of_run(run_dir)
    if hasattr(lesson, "segment_files"):  # prompted segmentation: masks, not classes
        return lesson.segment_files(run_dir, files, box, points, fmt, out_dir)
    if box or points:
        raise UserError(f"--box and --point prompt segment-anything runs; {run_dir!r} is not one.")
    if hasattr(lesson, "predict_files"):  # lessons whose exports do not take images (e.g. pose: keypoints)
        return lesson.predict_files(run_dir, files, top_k, fmt)
    predict, image_size, class_names = load_exported(run_dir, fmt)
    results = []
    for path in files:
        probabilities = predict(images.read_image_file(path, image_size)[None])[0]
        results.append({"file": path, "top_k": top_k_classes(probabilities, class_names, top_k)})
    return results


if __name__ == "__main__":
    sys.exit(main())
