"""TensorBoard's embedding projector for a model's posterior codes.

`write_projector(log_dir, codes, images, labels, class_names)` writes, under
`log_dir` (the trainer uses logs/projector/):

* a checkpoint of the codes [N, D] as one variable (the projector reads checkpoints);
* `sprite.png`: the N images tiled row-major in a square grid, no padding (the
  projector cuts it into thumbnails of the images' size; at most 8192 px a side);
* `metadata.tsv`: a "label" and a "class" column, one row per code, when labels are
  given;
* `projector_config.pbtxt`, which ties them together.

Then `tensorboard --logdir <log_dir>/..` shows the codes in the "Projector" tab:
PCA, t-SNE or UMAP in 3-D, points as their images, coloured or searched by class.
"""

import math
import os

import numpy as np
import tensorflow as tf

from tfvae.images import image_grid, write_png

SPRITE = "sprite.png"
METADATA = "metadata.tsv"
MAX_SPRITE_SIDE = 8192  # pixels; TensorBoard refuses larger sprites


def max_images(image_shape):
    """The most images of `image_shape` (H, W, C) one sprite holds."""
    per_side = MAX_SPRITE_SIDE // max(int(image_shape[0]), int(image_shape[1]))
    return per_side * per_side


def write_projector(log_dir, codes, images=None, labels=None, class_names=None):
    """Writes the projector files of `codes` [N, D] to `log_dir`; returns log_dir.

    images: [N, H, W, C] in [0, 1] for the sprite (C is 1 or 3), or None.
    labels: [N] integer class ids for the metadata, or None; `class_names` name them.
    """
    from tensorboard.plugins import projector  # noqa: PLC0415 -- optional package

    codes = np.asarray(codes, np.float32)
    if codes.ndim != 2 or not len(codes):
        raise ValueError(f"Expected codes [N, D], got shape {codes.shape}.")
    for name, array in (("images", images), ("labels", labels)):
        if array is not None and len(array) != len(codes):
            raise ValueError(f"{len(array)} {name} for {len(codes)} codes.")
    os.makedirs(log_dir, exist_ok=True)
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    if images is not None:
        images = np.asarray(images, np.float32)
        if len(images) > max_images(images.shape[1:]):
            raise ValueError(f"{len(images)} images of shape {images.shape[1:]} exceed "
                             f"a {MAX_SPRITE_SIDE}-pixel sprite; pass at most "
                             f"{max_images(images.shape[1:])}.")
        columns = math.ceil(math.sqrt(len(images)))
        write_png(os.path.join(log_dir, SPRITE),
                  image_grid(images, columns, padding=0, background=0.0))
        embedding.sprite.image_path = SPRITE
        embedding.sprite.single_image_dim.extend([images.shape[2], images.shape[1]])
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(int)
        names = class_names or [str(i) for i in range(labels.max() + 1)]
        with open(os.path.join(log_dir, METADATA), "w", encoding="utf-8") as f:
            f.write("label\tclass\n")
            f.writelines(f"{label}\t{names[label]}\n" for label in labels)
        embedding.metadata_path = METADATA
    checkpoint = tf.train.Checkpoint(embedding=tf.Variable(codes))
    checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    projector.visualize_embeddings(log_dir, config)
    return log_dir
