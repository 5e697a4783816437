"""Video datasets: short clips (a folder of class folders, UCF101 through TFDS, or a synthetic set) to tf.data.

Decoder: PyAV. It is maintained, ships binary wheels with FFmpeg inside (no system ffmpeg), reads
mp4, avi and gif, and encodes them too, so the synthetic set is written with the same library.
(tensorflow-io's video ops do not load on TF >= 2.18; TF itself decodes no video but GIF.)

A clip is `num_frames` frames taken `stride` apart from frame 0 (deterministic), each centre-cropped
to a square and resized to `size` x `size` with antialiasing (the crop keeps shapes undistorted;
UCF101 in TFDS is already square, so there it is a plain resize). Clips are float32 in [0, 1].

A folder is scanned once: a video that cannot be decoded, and one with too few frames for a clip,
are counted separately and named in `skipped` (report-ready), never silently dropped.

The synthetic action set draws a shape (circle, square or triangle) moving or changing size on a
photo background. Paired classes are time-reverses of each other: a "right" clip is a "left" clip
drawn from the same parameter distribution and played backwards (so up/down, grow/shrink), so no
single frame, and no set of frames, tells the class: only the motion does.
"""

import dataclasses
import os

import av
import numpy as np
import tensorflow as tf
from PIL import Image  # Pillow comes with matplotlib

from tfcourse import UserError
from tfcourse.data.folders import list_class_folder
from tfcourse.data.images import resize_image

AUTOTUNE = tf.data.AUTOTUNE
VIDEO_EXTENSIONS = (".mp4", ".avi", ".gif")
FPS = 25


class VideoTooShortError(UserError):
    """A readable video with fewer frames than a clip needs."""

    def __init__(self, path, frames, needed):
        self.path, self.frames, self.needed = path, frames, needed
        super().__init__(f"Video {path!r} has {frames} frame(s); a clip needs {needed} (num_frames and stride).")


def frames_needed(num_frames, stride):
    """Frames a video must have for `num_frames` frames `stride` apart from frame 0."""
    if num_frames < 1 or stride < 1:
        raise UserError(f"num_frames ({num_frames}) and stride ({stride}) must both be at least 1.")
    return (num_frames - 1) * stride + 1


# ## Reading


def decode_video_frames(path, num_frames, stride):
    """Frames 0, stride, 2*stride, ... of a video file -> uint8 [num_frames, H, W, 3] (RGB), decoded by PyAV.

    Decoding stops at the last frame needed. Raises UserError for a file that cannot be opened or
    decoded, and VideoTooShortError (a UserError) for one with too few frames.
    """
    needed = frames_needed(num_frames, stride)
    if not os.path.isfile(path):
        raise UserError(f"Video file {path!r} does not exist.")
    frames, count = [], 0
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise UserError(f"{path!r} has no video stream.")
            declared = container.streams.video[0].frames  # from the header; 0 where the format doesn't say
            for frame in container.decode(video=0):
                if count % stride == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
                count += 1
                if count == needed:
                    break
    except av.FFmpegError as error:
        raise UserError(f"{path!r} cannot be decoded as a video: {error}") from None
    if count == 0:
        raise UserError(f"{path!r} has a video stream but no decodable frames.")
    if count < needed and declared > count:
        raise UserError(f"{path!r} is truncated or damaged: its header declares {declared} frames, {count} decode.")
    if count < needed:
        raise VideoTooShortError(path, count, needed)
    return np.stack(frames)


def resize_clip(frames, size):
    """uint8 frames [T, H, W, 3] -> uint8 [T, size, size, 3]: centre square crop, antialiased resize (tf ops)."""
    shape = tf.shape(frames)
    side = tf.minimum(shape[1], shape[2])
    top, left = (shape[1] - side) // 2, (shape[2] - side) // 2
    return resize_image(frames[:, top : top + side, left : left + side], size)


def to_float(clips):
    """uint8 clips -> float32 in [0, 1] (what MoViNet takes)."""
    return tf.cast(clips, tf.float32) / 255.0


def read_video(path, num_frames, stride, size):
    """A video file -> float32 [num_frames, size, size, 3] in [0, 1]; see `decode_video_frames` for errors."""
    return to_float(resize_clip(decode_video_frames(path, num_frames, stride), size)).numpy()


# ## A folder of class folders


@dataclasses.dataclass
class VideoFolder:
    files: list  # paths of the usable videos, sorted by class then name
    labels: np.ndarray  # int class index per file
    class_names: list
    skipped: dict  # {"unreadable": {count, files}, "too_short": {count, files}, "not_video": {count, files}}


def _skipped(entries):
    return {"count": len(entries), "files": entries}


def scan_video_folder(root, num_frames, stride, skip_bad_files=True):
    """Lists `root/<class>/<video>` (.mp4 .avi .gif, any case) and checks every video yields a clip.

    Unreadable and too-short videos, and files that are not videos by extension, are counted and
    named per reason in `skipped`; with `skip_bad_files` off, any unusable video is a UserError.
    """
    needed = frames_needed(num_frames, stride)
    all_files, all_labels, class_names = list_class_folder(root, "video")
    files, labels, unreadable, too_short, not_video = [], [], [], [], []
    for path, label in zip(all_files, all_labels):
        if not path.lower().endswith(VIDEO_EXTENSIONS):
            not_video.append(path)
            continue
        try:
            decode_video_frames(path, num_frames, stride)
        except VideoTooShortError as error:
            too_short.append({"path": path, "frames": error.frames, "needed": needed})
            continue
        except UserError as error:
            unreadable.append({"path": path, "reason": str(error)})
            continue
        files.append(path)
        labels.append(label)
    if (unreadable or too_short) and not skip_bad_files:
        listing = "; ".join([u["reason"] for u in unreadable[:3]] + [f"{t['path']}: {t['frames']} frames" for t in too_short[:3]])
        raise UserError(
            f"{len(unreadable)} unreadable and {len(too_short)} too-short video(s) (a clip needs {needed} frames) "
            f"in {root!r} ({listing}). Remove them, or set data.skip_bad_files=true to skip and report them."
        )
    labels = np.asarray(labels, dtype=np.int64)
    for label, name in enumerate(class_names):
        if not np.any(labels == label):
            raise UserError(
                f"Class folder {os.path.join(root, name)!r} has no usable video "
                f"({', '.join(VIDEO_EXTENSIONS)} with at least {needed} frames)."
            )
    skipped = {"unreadable": _skipped(unreadable), "too_short": _skipped(too_short), "not_video": _skipped(not_video)}
    return VideoFolder(files, labels, class_names, skipped)


# ## tf.data pipelines


def clip_dataset(pairs, batch_size, training, seed, cache=True, shuffle_buffer=10_000):
    """Unbatched (uint8 clip, label) pairs -> batches of (float32 clip in [0, 1], label).

    Clips are cached as uint8 after decoding (in memory: a 8-frame 172 px clip is 0.7 MB), shuffled
    with `seed` when training, converted to float after batching, and prefetched.
    """
    ds = pairs.cache() if cache else pairs
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda clips, labels: (to_float(clips), labels), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def video_file_dataset(files, labels, num_frames, stride, size, batch_size, training, seed):
    """Video files + int labels -> batches of (float32 [B, num_frames, size, size, 3], label).

    PyAV decodes inside `tf.numpy_function` in a parallel map (the files should come from
    `scan_video_folder`, so all decode); the decoded clips are cached, so later epochs don't decode.
    """

    def decode(path):
        return decode_video_frames(path.decode(), num_frames, stride)

    def clip(path, label):
        frames = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
        frames.set_shape([num_frames, None, None, 3])
        return resize_clip(frames, size), label

    pairs = tf.data.Dataset.from_tensor_slices((list(files), np.asarray(labels, dtype=np.int64)))
    return clip_dataset(pairs.map(clip, num_parallel_calls=AUTOTUNE), batch_size, training, seed)


def video_array_dataset(clips, labels, batch_size, training, seed):
    """In-memory uint8 clips [N, T, H, W, 3] + labels -> batches of (float32 clip in [0, 1], label)."""
    pairs = tf.data.Dataset.from_tensor_slices((np.asarray(clips, dtype=np.uint8), np.asarray(labels, dtype=np.int64)))
    return clip_dataset(pairs, batch_size, training, seed, cache=False)


def ucf101_dataset(split, num_frames, stride, size, batch_size, training, seed, data_dir=None, download=True):
    """UCF101 through TFDS -> (batches of (float32 clip [B, num_frames, size, size, 3], label), class names).

    TFDS's default config has 256x256 uint8 videos; clips are sampled and resized with the same
    rule as the files (tf ops). The first call downloads and prepares the set (6.5 GB), so it needs
    the network. A video shorter than a clip stops the pipeline with a message (UCF101's shortest
    clip has 29 frames).
    """
    import tensorflow_datasets as tfds

    needed = frames_needed(num_frames, stride)
    ds, info = tfds.load("ucf101", split=split, data_dir=data_dir, with_info=True, download=download,
                         shuffle_files=training, read_config=tfds.ReadConfig(shuffle_seed=seed))

    def clip(example):
        video = example["video"]
        check = tf.debugging.assert_greater_equal(
            tf.shape(video)[0], needed, message=f"A UCF101 video is shorter than a clip ({needed} frames)"
        )
        with tf.control_dependencies([check]):
            frames = video[:needed:stride]
        return resize_clip(frames, size), example["label"]

    pairs = ds.map(clip, num_parallel_calls=AUTOTUNE)
    return clip_dataset(pairs, batch_size, training, seed, cache=False, shuffle_buffer=256), info.features["label"].names


# ## Writing videos


def write_video(path, frames, fps=FPS):
    """uint8 frames [T, H, W, 3] -> a video file chosen by extension, written by PyAV.

    .mp4: H.264 (libx264, CRF 18); .avi: Motion JPEG (quantiser 1-3); .gif: 256 colours per frame
    (Pillow's octree palette: FFmpeg's converter cannot make a palette, and median cut is 50x slower).
    H.264 and MJPEG halve the colour resolution (4:2:0). mp4 needs an even width and height.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    extension = os.path.splitext(path)[1].lower()
    height, width = frames.shape[1:3]
    if extension == ".mp4" and (height % 2 or width % 2):
        raise UserError(f"Cannot write {path!r}: H.264 (yuv420p) needs an even width and height, got {width}x{height}.")
    codec, pixel_format, options = {
        ".mp4": ("libx264", "yuv420p", {"crf": "18"}),
        ".avi": ("mjpeg", "yuvj420p", {"qmin": "1", "qmax": "3"}),
        ".gif": ("gif", "pal8", {}),
    }.get(extension, (None, None, None))
    if codec is None:
        raise UserError(f"Cannot write {path!r}: the extension must be one of {', '.join(VIDEO_EXTENSIONS)}.")
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for image in frames:
            frame = _palette_frame(image) if extension == ".gif" else av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _palette_frame(image):
    quantized = Image.fromarray(image).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    rgb = np.asarray(quantized.getpalette(), dtype=np.uint8).reshape(-1, 3)
    argb = np.zeros((256, 4), dtype=np.uint8)
    argb[:, 0] = 255
    argb[: len(rgb), 1:] = rgb
    return av.VideoFrame.from_ndarray((np.asarray(quantized), argb), format="pal8")


def count_frames(path):
    """Number of frames PyAV decodes from a video file."""
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


# ## The synthetic action set

ACTIONS = ("left", "right", "up", "down", "grow", "shrink")
REVERSE_OF = {"right": "left", "down": "up", "shrink": "grow"}  # the class played backwards
SHAPES = ("circle", "square", "triangle")


def sample_action_params(action, rng, num_frames, size, num_backgrounds):
    """Random parameters of one clip: shape, colour, background crop, and the per-frame trajectory.

    The random draws depend only on the pair (left/right, up/down, grow/shrink), so the same `rng`
    state gives "right" as exactly the time-reverse of "left". Shapes stay fully inside the frame:
    every shape fits in the square of half-side `radius` around its centre.
    """
    forward = REVERSE_OF.get(action, action)
    if forward not in ("left", "up", "grow"):
        raise UserError(f"Unknown action {action!r}; choose from {ACTIONS}.")
    t = np.linspace(0.0, 1.0, num_frames)
    params = {
        "action": action,
        "shape": SHAPES[rng.integers(len(SHAPES))],
        "colour": rng.uniform(0, 255, 3),
        "background": int(rng.integers(num_backgrounds)),
        "crop": rng.uniform(0, 1, 3),  # (side fraction, top fraction, left fraction) of the background crop
    }
    if forward == "grow":
        start, end = rng.uniform(0.05, 0.1) * size, rng.uniform(0.2, 0.3) * size
        centre = rng.uniform(end, size - end, 2)
        radii = start + (end - start) * t
        centres = np.repeat(centre[None], num_frames, axis=0)
    else:
        radius, distance = rng.uniform(0.08, 0.14) * size, rng.uniform(0.3, 0.5) * size
        along = rng.uniform(radius + distance, size - radius) - distance * t  # decreasing: moves left / up
        across = np.full(num_frames, rng.uniform(radius, size - radius))
        centres = np.stack([along, across] if forward == "left" else [across, along], axis=1)  # (x, y)
        radii = np.full(num_frames, radius)
    if action != forward:
        centres, radii = centres[::-1], radii[::-1]
    params["centres"], params["radii"] = centres, radii
    return params


def _shape_coverage(shape, cx, cy, radius, size, supersample=2):
    """Anti-aliased [size, size] coverage in [0, 1] of a shape centred at pixel coordinates (cx, cy)."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    coverage = np.zeros((size, size))
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    for oy in offsets:
        for ox in offsets:
            dx, dy = cols + ox - cx, rows + oy - cy
            if shape == "circle":
                inside = dx**2 + dy**2 <= radius**2
            elif shape == "square":
                inside = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
            else:  # triangle pointing up: apex at the top of the box, base at its bottom
                inside = (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) / 2)
            coverage += inside
    return coverage / supersample**2


def render_action_clip(params, backgrounds, size):
    """uint8 clip [T, size, size, 3] of a shape following `params` over a square crop of its background."""
    background = np.asarray(backgrounds[params["background"]])
    height, width = background.shape[:2]
    side_fraction, top_fraction, left_fraction = params["crop"]
    side = max(1, int(round((0.6 + 0.4 * side_fraction) * min(height, width))))
    top, left = int(top_fraction * (height - side)), int(left_fraction * (width - side))
    scene = resize_image(background[top : top + side, left : left + side], size).numpy().astype(np.float32)
    frames = []
    for (cx, cy), radius in zip(params["centres"], params["radii"]):
        alpha = _shape_coverage(params["shape"], cx, cy, radius, size)[..., None]
        frames.append(scene * (1 - alpha) + params["colour"] * alpha)
    return np.clip(np.round(np.stack(frames)), 0, 255).astype(np.uint8)


def _action_clips(backgrounds, clips_per_class, num_frames, size, seed, actions):
    if len(backgrounds) == 0:
        raise UserError("The synthetic action set needs at least one background image.")
    for label, action in enumerate(actions):
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, label, i])  # every clip its own draw
            params = sample_action_params(action, rng, num_frames, size, len(backgrounds))
            yield render_action_clip(params, backgrounds, size), label, i


def synthetic_action_clips(backgrounds, clips_per_class, num_frames, size, seed=0, actions=ACTIONS):
    """In memory: (uint8 clips [N, T, size, size, 3], int labels [N], class names), class by class."""
    clips, labels = [], []
    for clip, label, _ in _action_clips(backgrounds, clips_per_class, num_frames, size, seed, actions):
        clips.append(clip)
        labels.append(label)
    return np.stack(clips), np.asarray(labels, dtype=np.int64), list(actions)


def write_synthetic_actions(root, backgrounds, clips_per_class, num_frames, size, seed=0,
                            formats=("mp4", "avi", "gif"), actions=ACTIONS):
    """Writes `root/<action>/<action>_<i>.<format>`, the formats taken in turn in every class; -> summary.

    Every written file is decoded again and must give `num_frames` frames (lossy codecs change
    pixels, never the frame count). The summary counts clips per class and per format.
    """
    per_class, per_format = {a: 0 for a in actions}, {f: 0 for f in formats}
    for clip, label, i in _action_clips(backgrounds, clips_per_class, num_frames, size, seed, actions):
        action, extension = actions[label], formats[i % len(formats)]
        os.makedirs(os.path.join(root, action), exist_ok=True)
        path = write_video(os.path.join(root, action, f"{action}_{i:03d}.{extension}"), clip)
        if count_frames(path) != num_frames:
            raise RuntimeError(f"{path!r} was written with {num_frames} frames but decodes to {count_frames(path)}.")
        per_class[action] += 1
        per_format[extension] += 1
    return {"root": root, "clips": sum(per_class.values()), "per_class": per_class, "per_format": per_format,
            "num_frames": num_frames, "size": size}
