r"""Cost of checking a `tf.data` input's values (`tfvae.data.checked_values`, which
`VAE.fit` / `evaluate` / `predict` / `log_px` put on every dataset they are given).

    python -m tools.input_check_cost               # about a minute

Fits the MLP baseline (784-500-500-50, batch 100, XLA: a step of a few ms, the worst
case for a relative cost) on synthetic binary images through the stock
`keras.Model.fit`, once on a plain dataset and once on the checked one, alternating,
and prints the best epoch time of each and ms per step. Those differ by less than the
noise of a shared 2-core CPU, so it also times reading both datasets alone (no
training): the check's own time per batch, an upper bound of what it adds to a step
(it runs in the input pipeline, beside the step).
"""

import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tfvae import builders, cli, data

PROGRAM = "tools.input_check_cost"
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
flags.DEFINE_integer("images", 20000, "Synthetic training images per epoch.")
flags.DEFINE_integer("repeats", 5, "Timed epochs per dataset.")
FLAGS = flags.FLAGS


def _epoch_seconds(model, dataset):
    start = time.perf_counter()
    keras.Model.fit(model, dataset, epochs=1, verbose=0)  # the stock fit: no check added
    return time.perf_counter() - start


def _read_seconds(dataset):
    start = time.perf_counter()
    for _ in dataset:
        pass
    return time.perf_counter() - start


@cli.interruptible(PROGRAM, "it writes nothing.")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    images = (np.random.default_rng(0).random((FLAGS.images, 28, 28, 1)) > 0.5)
    batches = tf.data.Dataset.from_tensor_slices(images.astype("float32")).batch(100)
    datasets = {"plain": batches.prefetch(2),
                "checked": data.checked_values(batches).prefetch(2)}
    model = builders.build_model((28, 28, 1), latent_dim=50)
    model.compile(optimizer="adam", jit_compile=True)
    keras.Model.fit(model, datasets["plain"], epochs=1, verbose=0)  # trace and compile
    times = {name: [] for name in datasets}
    for _ in range(FLAGS.repeats):
        for name, dataset in datasets.items():
            times[name].append(_epoch_seconds(model, dataset))
    steps = -(-FLAGS.images // 100)
    best = {name: min(seconds) for name, seconds in times.items()}
    for name, seconds in times.items():
        print(f"{name:8s} epochs (s): {', '.join(f'{t:.2f}' for t in seconds)}; "
              f"best {best[name] / steps * 1e3:.2f} ms per step")
    step = min(best.values()) / steps
    read = {name: min(_read_seconds(d) for _ in range(FLAGS.repeats)) / steps
            for name, d in datasets.items()}
    check = read["checked"] - read["plain"]
    print(f"reading alone: plain {read['plain'] * 1e3:.3f}, checked "
          f"{read['checked'] * 1e3:.3f} ms per batch; the check {check * 1e3:.3f} ms, "
          f"{100 * check / step:.1f}% of a training step")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
