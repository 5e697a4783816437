"""A folder with one sub-folder per class: the layout every lesson's own data can come in."""

import os

from tfcourse import UserError


def list_class_folder(root, kind):
    """-> (files, labels, class names) of `root/<class>/<file>`, sorted; `kind` names the files in messages.

    Hidden files and folders are ignored. Fewer than two classes, or an empty class folder, is an error.
    """
    if not os.path.isdir(root):
        raise UserError(f"{kind.capitalize()} folder {root!r} does not exist or is not a folder (expected one sub-folder per class).")
    class_names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if len(class_names) < 2:
        raise UserError(
            f"{kind.capitalize()} folder {root!r} has {len(class_names)} class folder(s) {class_names}; "
            "a classifier needs at least two, one sub-folder per class."
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        folder = os.path.join(root, name)
        names = sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))
        if not names:
            raise UserError(f"Class folder {folder!r} is empty; every class needs {kind}s.")
        files += [os.path.join(folder, f) for f in names]
        labels += [label] * len(names)
    return files, labels, class_names
