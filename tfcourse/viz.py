"""Plots the lessons write as PNG files."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(figure, path, dpi=110):
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def plot_training_curves(histories, path, title="Training curves", metrics=("loss", "accuracy")):
    """`histories`: {run name: (first epoch, {metric: [per epoch]})}; one panel per metric, train and validation."""
    figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    axes = axes[0]
    for (name, (first_epoch, history)), color in zip(histories.items(), plt.cm.tab10.colors):
        for ax, metric in zip(axes, metrics):
            epochs = np.arange(first_epoch, first_epoch + len(history.get(metric, [])))
            ax.plot(epochs, history.get(metric, []), color=color, linestyle="--", label=f"{name} train")
            ax.plot(epochs, history.get("val_" + metric, []), color=color, label=f"{name} validation")
    for ax, metric in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_confusion_matrix(matrix, class_names, path, title="Confusion matrix"):
    matrix = np.asarray(matrix)
    size = max(4, 0.6 * len(class_names) + 2)
    figure, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    figure.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title)
    save_figure(figure, path)


def plot_audio_clip(waveform, log_mel, frame_probabilities, class_names, path, title, sample_rate, hop_samples,
                    patch_hop_samples, top=5):
    """The waveform, its log-mel spectrogram and the top classes over time, on one time axis."""
    figure, (wave_ax, spectrogram_ax, classes_ax) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    wave_ax.plot(np.arange(len(waveform)) / sample_rate, waveform, lw=0.5)
    wave_ax.set(ylabel="amplitude", title=title)
    seconds = len(log_mel) * hop_samples / sample_rate
    spectrogram_ax.imshow(log_mel.T, aspect="auto", origin="lower", extent=(0, seconds, 0, log_mel.shape[1]))
    spectrogram_ax.set(ylabel="mel band")
    ranked = np.argsort(-frame_probabilities.mean(0))[:top]
    times = np.arange(len(frame_probabilities)) * patch_hop_samples / sample_rate
    for i in ranked:
        classes_ax.plot(times, frame_probabilities[:, i], marker="o", label=class_names[i])
    classes_ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1))
    classes_ax.legend(fontsize=8, loc="upper right")
    save_figure(figure, path)


def plot_stream(waveform, log_mel, detections, truth, path, sample_rate, hop_samples):
    """A long recording: waveform with the spoken words, spectrogram, and the detections on one time axis."""
    seconds = len(waveform) / sample_rate
    figure, (wave_ax, spectrogram_ax) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    wave_ax.plot(np.arange(len(waveform)) / sample_rate, waveform, lw=0.4, color="gray")
    for start, end, word in truth:
        wave_ax.axvspan(start, end, color="tab:green", alpha=0.2)
        wave_ax.text((start + end) / 2, 0.9, word, ha="center", transform=wave_ax.get_xaxis_transform(), color="tab:green")
    for d in detections:
        wave_ax.axvline(d["time"], color="tab:red", lw=1)
        wave_ax.text(d["time"], 0.05, f"{d['word']} {d['confidence']:.2f}", rotation=90, va="bottom",
                     transform=wave_ax.get_xaxis_transform(), color="tab:red", fontsize=8)
    wave_ax.set(ylabel="amplitude", title="spoken (green) and detected (red)")
    spectrogram_ax.imshow(log_mel.T, aspect="auto", origin="lower", extent=(0, len(log_mel) * hop_samples / sample_rate, 0, log_mel.shape[1]))
    spectrogram_ax.set(xlabel="time (s)", ylabel="mel band", xlim=(0, seconds))
    save_figure(figure, path)


def plot_skeletons(items, skeleton, path, min_score=0.2, columns=4):
    """A grid of poses drawn over their images: `items` are (image [H, W, 3] or None, keypoints [k, 3]
    (x, y, score) in the image's pixels, title); `skeleton` lists (i, j) bones. Keypoints scored
    below `min_score` are left out. Without an image, the pose is drawn on a blank, y-down canvas."""
    rows = max(1, -(-len(items) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, keypoints, title) in zip(axes.flat, items):
        keypoints = np.asarray(keypoints)
        shown = keypoints[:, 2] >= min_score
        if image is not None:
            ax.imshow(image)
        else:
            ax.set_aspect("equal")
            ax.invert_yaxis()
        for i, j in skeleton:
            if shown[i] and shown[j]:
                ax.plot(keypoints[[i, j], 0], keypoints[[i, j], 1], color="lime", lw=2)
        ax.scatter(keypoints[shown, 0], keypoints[shown, 1], s=12, color="red", zorder=3)
        ax.set_title(title, fontsize=9)
    save_figure(figure, path)


def plot_image_rows(rows, column_titles, path, title=""):
    """A grid of images: `rows` is {row label: images [n, h, w, 1 or 3] with pixels in [0, 255]};
    each is drawn pixel for pixel (no smoothing), so a row at another resolution shows it."""
    columns = max(len(images) for images in rows.values())
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.8 * columns, 1.9 * len(rows)), squeeze=False)
    for ax_row, (label, images) in zip(axes, rows.items()):
        for i, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(images):
                ax.axis("off")
                continue
            image = np.clip(np.asarray(images[i], np.float32), 0, 255).astype(np.uint8)
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255,
                      interpolation="nearest")
            if ax_row is axes[0] and i < len(column_titles):
                ax.set_title(column_titles[i], fontsize=9)
        ax_row[0].set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    save_figure(figure, path)


def plot_box_grid(images, true_boxes, predicted_boxes, captions, path, title="", columns=4):
    """Images with their true (green) and predicted (red) boxes; boxes normalised x_min, y_min, x_max, y_max."""
    rows = int(np.ceil(len(images) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, true_box, predicted_box, caption in zip(axes.ravel(), images, true_boxes, predicted_boxes, captions):
        height, width = image.shape[:2]
        ax.imshow(image)
        for box, color in ((true_box, "lime"), (predicted_box, "red")):
            x0, y0, x1, y1 = np.asarray(box) * [width, height, width, height]
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=2))
        ax.set_title(caption, fontsize=8)
    figure.suptitle(title)
    save_figure(figure, path)


def plot_stream_probabilities(clips, probabilities, true_names, class_names, path, frames_shown=4, top=4):
    """Per clip, a row: a few of its frames, then the stream model's top class probabilities after each frame."""
    figure, axes = plt.subplots(len(clips), frames_shown + 1, figsize=(2 * frames_shown + 5, 2.3 * len(clips)),
                                squeeze=False, gridspec_kw={"width_ratios": [1] * frames_shown + [2.5]})
    for row, (clip, per_frame, truth) in enumerate(zip(clips, probabilities, true_names)):
        shown = np.linspace(0, len(clip) - 1, frames_shown).round().astype(int)
        for ax, frame in zip(axes[row], shown):
            ax.imshow(np.clip(clip[frame], 0, 1))
            ax.set_title(f"frame {frame + 1}", fontsize=8)
            ax.axis("off")
        ax = axes[row, -1]
        for i in np.argsort(-per_frame[-1])[:top]:
            ax.plot(np.arange(1, len(per_frame) + 1), per_frame[:, i], marker="o", ms=3, label=class_names[i],
                    lw=2.5 if class_names[i] == truth else 1)
        ax.set(ylim=(0, 1), xlabel="frames seen", ylabel="probability", title=f"true: {truth}")
        ax.legend(fontsize=7, loc="upper left")
    figure.suptitle("Stream model: class probabilities after each frame")
    save_figure(figure, path)


def plot_mask_overlays(rows, path, title=""):
    """A grid of images, each with a mask (translucent cyan, outlined) and its prompt drawn.

    `rows`: {row label: [cell]}, a cell being a dict with `image` (uint8 [h, w, 3]) and optionally
    `mask` (bool [h, w]), `box` ([x0, y0, x1, y1] pixels, drawn yellow), `points` ([[x, y, label]]:
    label 1 a green dot, 0 a red cross) and `caption`.
    """
    columns = max(len(cells) for cells in rows.values())
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.4 * columns, 2.5 * len(rows)), squeeze=False)
    for ax_row, (label, cells) in zip(axes, rows.items()):
        for ax, cell in zip(ax_row, cells + [None] * (columns - len(cells))):
            ax.set_xticks([])
            ax.set_yticks([])
            if cell is None:
                ax.axis("off")
                continue
            ax.imshow(cell["image"])
            if cell.get("mask") is not None:
                mask = np.asarray(cell["mask"], bool)
                ax.imshow(np.ma.masked_where(~mask, mask), cmap="cool", alpha=0.45, vmin=0, vmax=1)
                if mask.any() and not mask.all():
                    ax.contour(mask, [0.5], colors="cyan", linewidths=0.8)
            if cell.get("box") is not None:
                x0, y0, x1, y1 = cell["box"]
                ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="yellow", linewidth=1.5))
            for x, y, point_label in cell.get("points") or []:
                ax.plot(x, y, "o" if point_label == 1 else "x", color="lime" if point_label == 1 else "red", markersize=6)
            ax.set_title(cell.get("caption", ""), fontsize=8)
        ax_row[0].set_ylabel(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    save_figure(figure, path)
