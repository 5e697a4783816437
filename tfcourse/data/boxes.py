"""One object per image with its box: synthetic pasting and a Pascal VOC-style reader.

The folder layout is Pascal VOC's, so that synthetic and user data load through the same reader:

    ROOT/JPEGImages/NAME.jpg       (any image TensorFlow decodes: JPEG, PNG, GIF, BMP)
    ROOT/Annotations/NAME.xml      <annotation><size>..</size><object><name>CLASS</name>
                                   <bndbox><xmin/><ymin/><xmax/><ymax/></bndbox></object></annotation>
    ROOT/ImageSets/Main/{train,val,test}.txt   (optional: one NAME a line; else a seeded split)

Box coordinates are pixel edges: 0 <= xmin < xmax <= width (VOC's own files count from 1, so a
box there may end on the width; it is read as is). Boxes handed to a model are normalised
[x_min, y_min, x_max, y_max] in [0, 1], the "xyxy" order of `tfcourse.metrics.detection`.

Annotations are untrusted XML: they are parsed with the standard library's expat, and a file
with a document type declaration (where entity expansion attacks live) is refused. A file that
cannot be used (undecodable image, bad or missing annotation, no box, several objects, a box
outside the image) is counted and named in the summary, never silently dropped.
"""

import dataclasses
import os
import xml.etree.ElementTree as ElementTree
from xml.parsers import expat

import numpy as np
import tensorflow as tf

from tfcourse import UserError
from tfcourse.data import images

VOC_SPLIT_FILES = {"train": "train", "validation": "val", "test": "test"}


# ## Pasting objects onto backgrounds


def brightness_mask(image, threshold=30):
    """Object pixels of a photo on a black background (as PlantVillage's segmented leaves).

    A pixel is object where its brightest channel exceeds `threshold`; JPEG noise in the black
    leaves isolated specks, so rows and columns with fewer than 2% of the image's side in object
    pixels are cleared (the box is taken from the mask, and a speck would stretch it).
    """
    mask = np.asarray(image).max(axis=-1) > threshold
    min_count = max(2, int(0.02 * max(mask.shape)))
    mask &= (mask.sum(axis=1) >= min_count)[:, None]
    mask &= (mask.sum(axis=0) >= min_count)[None, :]
    return mask


def crop_to_mask(image, mask):
    """(image, mask) cut to the mask's bounding box."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise UserError("An object image has no object pixels: its mask is empty.")
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return image[window], mask[window]


def paste(background, obj, mask, rng, scale_range=(0.35, 0.8), flip_and_rotate=True):
    """Pastes `obj` (cropped to `mask`) at a random scale and position; -> (uint8 image, [x0, y0, x1, y1]).

    The scale is the object's longest side over the background's shortest side. The box is that
    of the pasted mask in pixel edges, so it is exact whatever the scale or rotation.
    """
    obj, mask = crop_to_mask(np.asarray(obj), np.asarray(mask))
    if flip_and_rotate:
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        obj, mask = np.rot90(obj, turns), np.rot90(mask, turns)
        if flip:
            obj, mask = obj[:, ::-1], mask[:, ::-1]
    height, width = background.shape[:2]
    longest = rng.uniform(*scale_range) * min(height, width)
    factor = longest / max(obj.shape[:2])
    size = (max(2, int(round(obj.shape[0] * factor))), max(2, int(round(obj.shape[1] * factor))))
    obj = tf.image.resize(obj[None].astype("float32"), size, antialias=True)[0].numpy()
    alpha = tf.image.resize(mask[None, ..., None].astype("float32"), size, antialias=True)[0].numpy()
    top, left = int(rng.integers(0, height - size[0] + 1)), int(rng.integers(0, width - size[1] + 1))
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    image = background.astype("float32").copy()
    image[window] = alpha * obj + (1 - alpha) * image[window]
    covered = alpha[..., 0] >= 0.5
    rows, cols = np.flatnonzero(covered.any(axis=1)), np.flatnonzero(covered.any(axis=0))
    box = [left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), box


def write_pasted_voc(root, objects, object_labels, class_names, backgrounds, object_splits, background_splits,
                     pastes_per_object, seed, scale_range=(0.35, 0.8)):
    """Writes a VOC folder of objects pasted onto backgrounds, split so no source is in two splits.

    `objects`: uint8 images with a bool mask each, as (image, mask) pairs; `object_splits` and
    `background_splits`: split -> indices. Each object of a split is pasted `pastes_per_object[split]`
    times, each time onto a random background of the same split. Returns split -> number of images.
    """
    rng = np.random.default_rng(seed)
    counts = {}
    for split, object_indices in object_splits.items():
        names = []
        for i in object_indices:
            for k in range(pastes_per_object[split]):
                background = backgrounds[rng.choice(background_splits[split])]
                image, box = paste(background, *objects[i], rng, scale_range)
                name = f"{split}_{i:04d}_{k}"
                write_voc_example(root, name, image, box, class_names[object_labels[i]])
                names.append(name)
        counts[split] = write_image_set(root, split, names)
    return counts


def write_voc_example(root, name, image, box, class_name):
    """Writes ROOT/JPEGImages/NAME.jpg and ROOT/Annotations/NAME.xml for one object (pixel box x0, y0, x1, y1)."""
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
    tf.io.write_file(os.path.join(root, "JPEGImages", name + ".jpg"), tf.io.encode_jpeg(image, quality=92))
    annotation = ElementTree.Element("annotation")
    ElementTree.SubElement(annotation, "filename").text = name + ".jpg"
    size = ElementTree.SubElement(annotation, "size")
    for tag, value in zip(("width", "height", "depth"), (image.shape[1], image.shape[0], 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    obj = ElementTree.SubElement(annotation, "object")
    ElementTree.SubElement(obj, "name").text = class_name
    bndbox = ElementTree.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
        ElementTree.SubElement(bndbox, tag).text = str(int(value))
    ElementTree.ElementTree(annotation).write(os.path.join(root, "Annotations", name + ".xml"), encoding="utf-8")


# ## Synthetic objects and backgrounds for smoke runs and tests


SHAPE_CLASSES = ("circle", "square", "triangle")


def synthetic_shapes(per_class, seed=0, size=48):
    """Coloured shapes with their masks: ([(uint8 image, bool mask)], labels), `per_class` of each class."""
    rng = np.random.default_rng(seed)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    objects, labels = [], []
    for label, name in enumerate(SHAPE_CLASSES):
        for _ in range(per_class):
            if name == "circle":
                mask = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.25
            elif name == "square":
                mask = np.ones((size, size), bool)
            else:
                mask = np.abs(xx - 0.5) < yy / 2
            image = np.broadcast_to(rng.uniform(120, 255, 3), (size, size, 3)) + rng.normal(0, 10, (size, size, 3))
            objects.append((np.clip(image, 0, 255).astype(np.uint8), mask))
            labels.append(label)
    return objects, np.asarray(labels)


def textured_backgrounds(count, seed=0, height=96, width=128):
    """Dark striped and noisy backgrounds, each with its own stripe angle and frequency."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    backgrounds = []
    for _ in range(count):
        angle, frequency = rng.uniform(0, np.pi), rng.uniform(5, 30)
        stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * frequency * 2 * np.pi)
        image = rng.uniform(20, 70, 3) * (1 + 0.5 * stripes[..., None]) + rng.normal(0, 12, (height, width, 3))
        backgrounds.append(np.clip(image, 0, 255).astype(np.uint8))
    return backgrounds


def read_objects_and_backgrounds(objects_dir, backgrounds_dir, mask_threshold, skip_bad_files=True):
    """The sources of a pasted set: objects photographed on black with their masks, and photos.

    Returns ([(uint8 image, bool mask)], labels, class names, [uint8 photo], skipped): `objects_dir`
    holds one folder per class; an object with no pixel above `mask_threshold`, and any file that
    cannot be decoded, is skipped and named.
    """
    folder = images.scan_image_folder(objects_dir, skip_bad_files)
    skipped = list(folder.skipped)
    objects = [(image, brightness_mask(image, mask_threshold)) for image in read_image_files(folder.files)]
    empty = [i for i, (_, mask) in enumerate(objects) if not mask.any()]
    skipped += [{"path": folder.files[i], "reason": "no pixel brighter than data.mask_threshold"} for i in empty]
    keep = np.setdiff1d(np.arange(len(objects)), empty)
    backgrounds, background_skipped = read_backgrounds(backgrounds_dir)
    return ([objects[i] for i in keep], folder.labels[keep], folder.class_names, backgrounds,
            skipped + background_skipped)


def read_backgrounds(folder):
    """The decodable photos of `folder` (at least 3, one per split) and the skipped ones."""
    if not os.path.isdir(folder):
        raise UserError(f"data.backgrounds = {folder!r} is not a folder of photos.")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if not f.startswith("."))
    files = [f for f in files if os.path.isfile(f)]
    bad = set(images._undecodable(files)) if files else set()
    readable = [f for i, f in enumerate(files) if i not in bad]
    if len(readable) < 3:
        raise UserError(f"data.backgrounds = {folder!r} has {len(readable)} readable photo(s); at least 3 are needed "
                        "(one per split).")
    return read_image_files(readable), [{"path": files[i], "reason": images._decode_error(files[i])} for i in sorted(bad)]


def read_image_files(files):
    """Decoded uint8 images of `files` at their own size."""
    return [tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False).numpy() for path in files]


# ## Reading a VOC folder


@dataclasses.dataclass
class BoxFolder:
    files: list  # the usable images
    boxes: np.ndarray  # [n, 4] float32 normalised x_min, y_min, x_max, y_max
    labels: np.ndarray  # [n] int class index
    class_names: list
    splits: dict  # split -> indices into files, from ImageSets/Main; {} where the folder has none
    skipped: list  # [{"path": ..., "reason": ...}] files that could not be used


class _DoctypeRefused(ValueError):
    pass


def parse_untrusted_xml(data):
    """Bytes -> ElementTree element, refusing document type declarations (so no entities, no DTDs).

    The standard library parses with expat; its handlers refuse a DOCTYPE before anything in it
    is expanded. (defusedxml does the same; this needs no extra dependency.)
    """
    def refuse(*_):
        raise _DoctypeRefused("a document type declaration (DTD/entities) is not allowed")

    builder = ElementTree.TreeBuilder()
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    parser.Parse(data, True)
    return builder.close()


def parse_annotation(data):
    """One VOC annotation's bytes -> (class name, [xmin, ymin, xmax, ymax], (width, height) or None).

    Raises ValueError with the reason where it cannot be used.
    """
    try:
        root = parse_untrusted_xml(data)
    except _DoctypeRefused as error:
        raise ValueError(str(error)) from None
    except expat.ExpatError as error:
        raise ValueError(f"not well-formed XML ({expat.ErrorString(error.code)})") from None
    objects = root.findall("object")
    if len(objects) != 1:
        raise ValueError(f"{len(objects)} objects; one object per image is expected")
    name = (objects[0].findtext("name") or "").strip()
    if not name:
        raise ValueError("the object has no <name>")
    bndbox = objects[0].find("bndbox")
    if bndbox is None:
        raise ValueError("the object has no <bndbox>")
    try:
        box = [float(bndbox.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
    except (TypeError, ValueError):
        raise ValueError("<bndbox> needs numeric xmin, ymin, xmax and ymax") from None
    if not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"invalid box {box}: needs xmin < xmax and ymin < ymax")
    size = None
    if root.find("size") is not None:
        try:
            size = (int(root.find("size").findtext("width")), int(root.find("size").findtext("height")))
        except (TypeError, ValueError):
            raise ValueError("<size> needs integer width and height") from None
    return name, box, size


def read_voc_folder(root, class_names=None, skip_bad_files=True):
    """Reads a VOC folder (see module doc) -> BoxFolder; boxes normalised by each image's decoded size.

    `class_names`: the classes in label order; by default the sorted names found. An object of
    another class is a bad file. With `skip_bad_files` off, any bad file stops the run.
    """
    image_dir, annotation_dir = os.path.join(root, "JPEGImages"), os.path.join(root, "Annotations")
    for folder in (image_dir, annotation_dir):
        if not os.path.isdir(folder):
            raise UserError(f"{root!r} is not a VOC-style folder: {folder!r} is missing (see tfcourse.data.boxes).")
    image_files = {os.path.splitext(f)[0]: f for f in sorted(os.listdir(image_dir)) if not f.startswith(".")}
    annotation_names = {os.path.splitext(f)[0] for f in os.listdir(annotation_dir) if f.endswith(".xml")}
    skipped = [{"path": os.path.join(annotation_dir, n + ".xml"), "reason": "no image of that name in JPEGImages"}
               for n in sorted(annotation_names - set(image_files))]
    names = sorted(set(image_files))
    paths = [os.path.join(image_dir, image_files[n]) for n in names]
    undecodable = set(images._undecodable(paths)) if paths else set()
    records = []
    for index, (name, path) in enumerate(zip(names, paths)):
        if index in undecodable:
            skipped.append({"path": path, "reason": images._decode_error(path)})
            continue
        if name not in annotation_names:
            skipped.append({"path": path, "reason": "no annotation Annotations/" + name + ".xml"})
            continue
        xml_path = os.path.join(annotation_dir, name + ".xml")
        try:
            with open(xml_path, "rb") as f:
                class_name, box, size = parse_annotation(f.read())
            height, width = _image_size(path)
            if size is not None and size != (width, height):
                raise ValueError(f"<size> says {size[0]}x{size[1]} but the image is {width}x{height}")
            if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
                raise ValueError(f"box {box} lies outside the {width}x{height} image")
            if class_names is not None and class_name not in class_names:
                raise ValueError(f"class {class_name!r} is not one of {list(class_names)}")
        except ValueError as error:
            skipped.append({"path": xml_path, "reason": str(error)})
            continue
        records.append((name, path, class_name, np.asarray(box) / [width, height, width, height]))
    if skipped and not skip_bad_files:
        listing = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:5])
        raise UserError(f"{len(skipped)} file(s) in {root!r} cannot be used ({listing}). Fix or remove them, "
                        "or set data.skip_bad_files=true to skip and report them.")
    if not records:
        raise UserError(f"{root!r} holds no usable image with one annotated object ({len(skipped)} file(s) skipped).")
    class_names = list(class_names) if class_names is not None else sorted({r[2] for r in records})
    return BoxFolder(
        files=[r[1] for r in records],
        boxes=np.stack([r[3] for r in records]).astype("float32"),
        labels=np.asarray([class_names.index(r[2]) for r in records]),
        class_names=class_names,
        splits=read_image_sets(root, [r[0] for r in records]),
        skipped=skipped,
    )


def _image_size(path):
    shape = tf.shape(tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False))
    return int(shape[0]), int(shape[1])


def write_image_set(root, split, names, task="Main"):
    """Writes ROOT/ImageSets/TASK/{train,val,test}.txt for `split`, one name a line; -> how many."""
    folder = os.path.join(root, "ImageSets", task)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, VOC_SPLIT_FILES[split] + ".txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return len(names)


def read_image_sets(root, usable_names, task="Main"):
    """split -> indices of `usable_names` listed in ImageSets/TASK/{train,val,test}.txt; {} if none exist."""
    folder = os.path.join(root, "ImageSets", task)
    paths = {split: os.path.join(folder, name + ".txt") for split, name in VOC_SPLIT_FILES.items()}
    if not all(os.path.isfile(p) for p in paths.values()):
        return {}
    position = {name: i for i, name in enumerate(usable_names)}
    splits, seen = {}, {}
    for split, path in paths.items():
        with open(path) as f:
            listed = [line.split()[0] for line in f if line.strip()]
        for name in listed:
            if seen.setdefault(name, split) != split:
                raise UserError(f"{name!r} is listed in two splits ({seen[name]} and {split}) under {folder!r}.")
        splits[split] = np.asarray(sorted(position[n] for n in listed if n in position), dtype=int)
    return splits


def box_dataset(files, boxes, labels, image_size):
    """Unbatched (uint8 [size, size, 3] image, {"class": label, "box": normalised box}) pairs.

    The image is resized to a square; a normalised box is unchanged by that.
    """
    targets = tf.data.Dataset.from_tensor_slices({"class": np.asarray(labels), "box": np.asarray(boxes, "float32")})
    return tf.data.Dataset.zip((images.decoded_files(files, image_size), targets))


def random_horizontal_flip(image, targets):
    """Flips a batch's images left-right at random (new draws every epoch), and their boxes with them."""
    flip = tf.random.uniform([tf.shape(image)[0]]) < 0.5
    image = tf.where(flip[:, None, None, None], image[:, :, ::-1], image)
    x0, y0, x1, y1 = tf.unstack(targets["box"], axis=-1)
    flipped = tf.stack([1 - x1, y0, 1 - x0, y1], axis=-1)
    return image, {**targets, "box": tf.where(flip[:, None], flipped, targets["box"])}
