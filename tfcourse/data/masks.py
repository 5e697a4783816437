"""Object masks: objects pasted onto photos with exact masks, and a Pascal VOC-style segmentation reader.

The folder layout is Pascal VOC's segmentation layout, so pasted and user data load the same way:

    ROOT/JPEGImages/NAME.jpg             (any image TensorFlow decodes)
    ROOT/SegmentationClass/NAME.png      8-bit label map of the same size: 0 background, 1..254 object
                                         (VOC's class indices, read from its palette PNGs), 255 ignored
    ROOT/ImageSets/Segmentation/{train,val,test}.txt   (optional: one NAME a line; else a seeded split)

The lessons segment object against background: every labelled pixel is object, and the prompt box
is the box of all of them. Pixels labelled 255 (VOC's object outlines) are left out of the metrics.
A file that cannot be used (undecodable image or mask, missing mask, sizes that differ, no object
pixel) is counted and named in the summary, never silently dropped.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from tfcourse import UserError
from tfcourse.data import boxes, images

IGNORE = 255


# ## Pasting objects onto photos, with their masks


def rotate(obj, mask, degrees):
    """(image, bool mask) rotated by `degrees` on a canvas large enough to hold every corner."""
    height, width = mask.shape
    side = int(np.ceil(np.hypot(height, width)))
    theta = np.deg2rad(degrees)
    cos, sin = np.cos(theta), np.sin(theta)
    stacked = np.concatenate([np.asarray(obj, "float32"), np.asarray(mask, "float32")[..., None]], -1)
    canvas = np.zeros((side, side, 4), "float32")
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = stacked
    # The transform maps each output pixel to the input pixel it samples: a rotation about the centre.
    centre = (side - 1) / 2
    transform = [cos, -sin, centre * (1 - cos + sin), sin, cos, centre * (1 - sin - cos), 0, 0]
    rotated = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(
        canvas[None], np.asarray([transform], "float32"), interpolation="bilinear", fill_mode="constant"))[0]
    return rotated[..., :3], rotated[..., 3] >= 0.5


def paste_with_mask(background, obj, mask, rng, scale_range=(0.35, 0.8)):
    """Pastes `obj` (cut out by `mask`) at a random rotation, scale and position; -> (uint8 image, bool mask).

    Edges are hard: a pixel is taken whole from the object where its resized mask is >= 0.5 and
    from the background elsewhere, so the returned mask is exactly the object's pixels.
    The scale is the object's longest side over the background's shortest side.
    """
    obj, mask = rotate(*boxes.crop_to_mask(np.asarray(obj), np.asarray(mask)), rng.uniform(0, 360))
    obj, mask = boxes.crop_to_mask(obj, mask)
    height, width = background.shape[:2]
    factor = rng.uniform(*scale_range) * min(height, width) / max(mask.shape)
    size = (max(2, int(round(mask.shape[0] * factor))), max(2, int(round(mask.shape[1] * factor))))
    obj = tf.image.resize(obj[None], size, antialias=True)[0].numpy()
    inside = tf.image.resize(mask[None, ..., None].astype("float32"), size, antialias=True)[0, ..., 0].numpy() >= 0.5
    top, left = int(rng.integers(0, height - size[0] + 1)), int(rng.integers(0, width - size[1] + 1))
    image, full_mask = np.array(background, np.uint8), np.zeros((height, width), bool)
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    image[window][inside] = np.clip(np.round(obj[inside]), 0, 255).astype(np.uint8)
    full_mask[window] = inside
    return image, full_mask


def square_crop(image, size, rng):
    """A random square crop of the image's shortest side, resized to `size` x `size`."""
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return images.resize_image(image[top : top + side, left : left + side], size).numpy()


def write_pasted_segmentation(root, objects, backgrounds, object_splits, background_splits, pastes_per_object, seed,
                              image_size, scale_range=(0.35, 0.8)):
    """Writes a VOC segmentation folder of objects pasted onto square crops of backgrounds.

    `objects`: (uint8 image, bool mask) pairs; `object_splits` and `background_splits`: split ->
    indices, disjoint, so no object and no background is in two splits. Each object of a split is
    pasted `pastes_per_object[split]` times onto random backgrounds of the same split. Returns
    split -> number of images.
    """
    rng = np.random.default_rng(seed)
    counts = {}
    for split, object_indices in object_splits.items():
        names = []
        for i in object_indices:
            for k in range(pastes_per_object[split]):
                background = square_crop(backgrounds[rng.choice(background_splits[split])], image_size, rng)
                image, mask = paste_with_mask(background, *objects[i], rng, scale_range)
                names.append(f"{split}_{i:04d}_{k}")
                write_example(root, names[-1], image, mask.astype(np.uint8))
        counts[split] = boxes.write_image_set(root, split, names, "Segmentation")
    return counts


def write_example(root, name, image, label_map):
    """ROOT/JPEGImages/NAME.jpg and ROOT/SegmentationClass/NAME.png (a lossless 8-bit label map)."""
    for folder in ("JPEGImages", "SegmentationClass"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    tf.io.write_file(os.path.join(root, "JPEGImages", name + ".jpg"), tf.io.encode_jpeg(image, quality=95))
    tf.io.write_file(os.path.join(root, "SegmentationClass", name + ".png"), tf.io.encode_png(label_map[..., None]))


# ## Reading a VOC segmentation folder


@dataclasses.dataclass
class MaskFolder:
    files: list  # the usable images
    masks: list  # their label-map PNGs
    splits: dict  # split -> indices from ImageSets/Segmentation, or {} where the folder has none
    skipped: list  # [{"path", "reason"}]


def read_label_map(path):
    """A label-map PNG -> uint8 [H, W] of class indices (PIL reads a palette PNG's indices, where
    tf.io.decode_png would return its colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "1"):
                raise ValueError(f"a label map must be a palette or 8-bit grey PNG, this one is {image.mode}")
            return np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"cannot be read as a label map: {error}") from None


def object_mask(label_map):
    """uint8 [H, W]: 1 object, 0 background, IGNORE where the label map says 255."""
    return np.where(label_map == IGNORE, IGNORE, (label_map > 0).astype(np.uint8)).astype(np.uint8)


def read_segmentation_folder(root, skip_bad_files=True):
    """Reads a VOC segmentation folder (see module doc) -> MaskFolder."""
    image_dir, mask_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "SegmentationClass")
    for folder in (image_dir, mask_dir):
        if not os.path.isdir(folder):
            raise UserError(f"{root!r} is not a VOC-style segmentation folder: {folder!r} is missing "
                            "(see tfcourse.data.masks).")
    image_files = {os.path.splitext(f)[0]: f for f in sorted(os.listdir(image_dir)) if not f.startswith(".")}
    mask_names = {os.path.splitext(f)[0] for f in os.listdir(mask_dir) if f.endswith(".png")}
    skipped = [{"path": os.path.join(mask_dir, n + ".png"), "reason": "no image of that name in JPEGImages"}
               for n in sorted(mask_names - set(image_files))]
    names = sorted(image_files)
    paths = [os.path.join(image_dir, image_files[n]) for n in names]
    undecodable = set(images._undecodable(paths)) if paths else set()
    usable = []
    for index, (name, path) in enumerate(zip(names, paths)):
        mask_path = os.path.join(mask_dir, name + ".png")
        try:
            if index in undecodable:
                raise ValueError(images._decode_error(path))
            if name not in mask_names:
                raise ValueError(f"no label map SegmentationClass/{name}.png")
            mask = object_mask(read_label_map(mask_path))
            height, width = boxes._image_size(path)
            if mask.shape != (height, width):
                raise ValueError(f"its label map is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}")
            if not np.any(mask == 1):
                raise ValueError("its label map has no object pixel")
        except ValueError as error:
            skipped.append({"path": path, "reason": str(error)})
            continue
        usable.append((name, path, mask_path))
    if skipped and not skip_bad_files:
        listing = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise UserError(f"{len(skipped)} file(s) in {root!r} cannot be used ({listing}). Fix or remove them, "
                        "or set data.skip_bad_files=true to skip and report them.")
    if not usable:
        raise UserError(f"{root!r} holds no usable image with a label map ({len(skipped)} file(s) skipped).")
    return MaskFolder(files=[u[1] for u in usable], masks=[u[2] for u in usable],
                      splits=boxes.read_image_sets(root, [u[0] for u in usable], "Segmentation"), skipped=skipped)


def mask_dataset(files, mask_files, image_size):
    """Unbatched (uint8 [size, size, 3] image, uint8 [size, size] mask) pairs; masks resized by nearest neighbour."""
    def load_mask(path):
        return object_mask(read_label_map(path.decode()))

    def mask(path):
        label_map = tf.ensure_shape(tf.numpy_function(load_mask, [path], tf.uint8, stateful=False), (None, None))
        resized = tf.image.resize(label_map[..., None], (image_size, image_size), method="nearest")
        return tf.ensure_shape(resized[..., 0], (image_size, image_size))

    masks = tf.data.Dataset.from_tensor_slices(list(mask_files)).map(mask, num_parallel_calls=tf.data.AUTOTUNE)
    return tf.data.Dataset.zip((images.decoded_files(files, image_size), masks))


def mask_box(mask):
    """The object's box [x0, y0, x1, y1] in pixel edges (float32) from a [H, W] mask (1 object; 0 or IGNORE not)."""
    inside = tf.equal(mask, 1)
    rows = tf.where(tf.reduce_any(inside, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(inside, axis=0))[:, 0]
    return tf.cast(tf.stack([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]), tf.float32)


def jitter_box(box, image_size, fraction, seed=None):
    """Moves each edge by up to `fraction` of the box's side (uniform), kept inside the image: the
    imprecise box a person draws."""
    side = tf.stack([box[2] - box[0], box[3] - box[1]] * 2)
    shift = tf.random.uniform([4], -fraction, fraction, seed=seed) * side
    return tf.clip_by_value(box + shift, 0.0, float(image_size))


def interior_point(mask):
    """(x, y) of the object pixel farthest from the background (float, pixel centre): a click a person would make."""
    inside = np.pad(np.asarray(mask) == 1, 1)
    # Distance to the background by repeated erosion: the last pixels to go are the deepest.
    deepest = inside
    while True:
        eroded = deepest[1:-1, 1:-1] & deepest[:-2, 1:-1] & deepest[2:, 1:-1] & deepest[1:-1, :-2] & deepest[1:-1, 2:]
        eroded = np.pad(eroded, 1)
        if not eroded.any():
            break
        deepest = eroded
    rows, cols = np.nonzero(deepest)
    middle = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
    return np.array([cols[middle] - 1 + 0.5, rows[middle] - 1 + 0.5], np.float32)
