r"""Benchmark training throughput and k=5000 NLL evaluation time, XLA on and off,
in float32 and in 16 bits.

    python -m tools.benchmark                        # MLP baseline, about 2-3 minutes
    python -m tools.benchmark --config=configs/mnist_vampprior.cfg
    python -m tools.benchmark --long --output=benchmark.json
    python -m tools.benchmark --config=configs/mnist_deep_hvae.cfg \
        --precision=float32,mixed_bfloat16 --num_samples=100 --nll_images=20

Each setting is a pair (jit_compile, precision) from --jit x --precision. Beside
images/s the table gives the FLOPs of one training image (forward, backward; counted
by TensorFlow's profiler on the traced step: convolutions and matmuls), the GFLOP/s
that throughput achieves, and this machine's matmul peak (2048 x 2048, float32 and
bfloat16) measured in the same run, so that a model's efficiency reads as a ratio.

Training: the stock `model.fit` on synthetic binary 28x28 images held in memory
(a cached `tf.data` pipeline), `jit_compile=True` and False, `steps_per_execution`
as the config's (20 by default, as configs/mnist.cfg); images/s is the median
over the timed epochs after `--warmup_epochs` (which include tracing and XLA
compilation). Evaluation: `tfvae.evaluate.importance_sampled_log_px` with
k=`--num_samples` on `--nll_images` images after a compile-only warm-up, reported
as seconds per 1000 images and extrapolated to the 10,000 test images of MNIST; of
the model's float32 copy, as `tools.evaluate` computes it (`--nll_precision=trained`:
in the setting's policy, as `tools.evaluate --precision=trained`).

Besides wall time, the table gives process CPU seconds (all threads): on a machine
shared with other jobs the wall time can vary 2x or more, the CPU time much less.
The "CPU-bound estimate" rows divide the CPU time by the cores, i.e. what the machine
would give if it were ours alone and the work spread perfectly over its cores (an
optimistic figure; on a GPU they mean little). Timings are of this machine, printed
above the table (CPU model, cores, TensorFlow, GPU).
The model is the MLP baseline 784-500-500-50 (ReLU, Bernoulli, batch 100) unless
--config names a trainer flagfile, whose model options, batch size and optimizer
are used (its other flags are ignored); absl reads it with the trainer's own flag
definitions (`tfvae.train.trainer_flags`), so a flag the trainer would refuse is
refused here too.

Bad input (a missing or unreadable --config, a bad flag in it, a count below 1, an
--output that cannot be written) ends with one line `tools.benchmark: error: ...`
and status 1 before any timing; Ctrl-C with one line and status 130.
"""

import statistics
import time

from absl import app, flags

from tfvae import checks, cli, user_files

PROGRAM = "tools.benchmark"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
JIT_SETTINGS = {"true": True, "false": False, "1": True, "0": False, "on": True,
                "off": False, "yes": True, "no": False}
flags.DEFINE_string("config", None, "A trainer flagfile (configs/*.cfg) whose model "
                    "options to benchmark; default: the MLP baseline.")
flags.DEFINE_integer("batch_size", None, "Training batch; default: the config's, "
                     "else 100.", lower_bound=1)
flags.DEFINE_integer("steps_per_execution", None, "Training steps per compiled call; "
                     "default: the config's, else 20 (as configs/mnist.cfg).",
                     lower_bound=1)
flags.DEFINE_integer("train_images", 10_000, "Synthetic images per training epoch.",
                     lower_bound=1)
flags.DEFINE_integer("warmup_epochs", 1, "Untimed epochs (tracing, compilation).",
                     lower_bound=0)
flags.DEFINE_integer("epochs", 5, "Timed epochs; the median is reported.",
                     lower_bound=1)
flags.DEFINE_integer("num_samples", 5000, "k of the NLL evaluation.", lower_bound=1)
flags.DEFINE_integer("nll_images", 100, "Images of the timed NLL evaluation.",
                     lower_bound=1)
flags.DEFINE_integer("nll_batch_size", 100, "Images per compiled NLL call.",
                     lower_bound=1)
flags.DEFINE_enum("nll_precision", "float32", ["float32", "trained"], "float32: time the "
                  "NLL of the model's float32 copy, as tools.evaluate computes it by "
                  "default; trained: in the setting's policy (its --precision=trained).")
flags.DEFINE_list("jit", ["true", "false"], "jit_compile settings to compare.")
flags.register_validator("jit", lambda v: bool(v) and all(
    s.lower() in JIT_SETTINGS for s in v), message="--jit must list true and/or false.")
flags.DEFINE_list("precision", ["float32"], "Mixed-precision policies to compare: "
                  "float32, mixed_bfloat16, mixed_float16.")
flags.register_validator("precision", lambda v: bool(v) and all(
    s in PRECISIONS for s in v), message="--precision must list float32, "
    "mixed_bfloat16 and/or mixed_float16.")
flags.DEFINE_bool("long", False, "Longer, steadier runs: 10 timed epochs of 20,000 "
                  "images and the NLL on 1000 images.")
flags.DEFINE_string("output", None, "Also write the results as JSON here.")

IMAGE_SHAPE = (28, 28, 1)
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
NUM_CLASSES = 10  # of a conditional config's synthetic labels


def rows(data, count):
    """The first `count` images (and labels) of `data`."""
    return {k: v[:count] for k, v in data.items()} if isinstance(data, dict) \
        else data[:count]


def read_config(path):
    """Model options, batch size and optimizer settings of the trainer flagfile `path`
    (the flags it sets); InputError with absl's words for what the trainer refuses."""
    from tfvae import builders, train

    trainer = train.trainer_flags()
    try:
        trainer(["tfvae.train", f"--flagfile={path}"])
    except flags.Error as error:
        raise checks.InputError(f"--config {path}: {cli.flag_error(error)}") from None
    try:
        values = train.options_from_flags(trainer)
    except train.ConfigError as error:
        raise checks.InputError(f"--config {path}: {error}") from None
    names = [*builders.MODEL_DEFAULTS, "batch_size", "optimizer", "learning_rate",
             "steps_per_execution", "conditional"]
    return {name: tuple(values[name]) if isinstance(values[name], list) else values[name]
            for name in names if trainer[name].present}


def build(options, jit_compile):
    from tfvae import builders

    model_options = {k: v for k, v in options.items()
                     if k not in ("batch_size", "optimizer", "learning_rate",
                                  "steps_per_execution", "conditional")}
    model = builders.build_model(IMAGE_SHAPE, **model_options,
                                 num_classes=NUM_CLASSES if options.get("conditional") else 0)
    model.compile(optimizer=builders.build_optimizer(
        options.get("optimizer", "adam"), options.get("learning_rate", 1e-3)),
        jit_compile=jit_compile, steps_per_execution=options.get("steps_per_execution", 1))
    return model


def training_flops(model, batch_size):
    """FLOPs of one training image: loss and gradients of a batch, traced once and
    counted by TensorFlow's profiler (ops with a FLOP count: matmuls, convolutions)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    @tf.function
    def step(images):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(y_pred=model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    spec = tf.TensorSpec([batch_size, *IMAGE_SHAPE])
    if model.num_classes:
        spec = {"images": spec, "labels": tf.TensorSpec([batch_size], tf.int32)}
    graph = step.get_concrete_function(spec).graph
    options = option_builder.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return model_analyzer.profile(graph, options=options).total_float_ops / batch_size


def matmul_peak(dtype, size=2048, repeats=10):
    """TFLOP/s of a size x size matmul in `dtype` ("float32" or "bfloat16")."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal([size, size]), dtype)
    product = tf.function(lambda a: tf.matmul(a, a))
    product(a).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        product(a).numpy()
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e12


def training_throughput(options, jit_compile, images, batch_size, warmup, epochs):
    """Median images/s and CPU seconds per 1000 images over the timed epochs."""
    import keras
    import tensorflow as tf

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.wall, self.cpu = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.wall.append(time.perf_counter() - self._start[0])
            self.cpu.append(time.process_time() - self._start[1])

    keras.utils.set_random_seed(0)
    model = build(options, jit_compile)
    # No prefetch: the data are in memory already, and with a prefetch thread `fit`
    # idled about 0.5 s at the start of half the epochs on a 2-core CPU (measured),
    # a stall the trainer's own pipeline does not show.
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).cache()
    timer = Timer()
    model.fit(ds, epochs=warmup + epochs, verbose=0, callbacks=[timer])
    wall, cpu = timer.wall[warmup:], timer.cpu[warmup:]
    count = len(images["images"] if isinstance(images, dict) else images)
    images_per_s = count / statistics.median(wall)
    flops = training_flops(model, batch_size)
    return {"images_per_s": images_per_s,
            "cpu_s_per_1000_images": 1000 * statistics.median(cpu) / count,
            "gflop_per_image": flops / 1e9, "gflop_per_s": flops * images_per_s / 1e9,
            "epoch_s": wall, "params": model.count_params()}


def nll_time(options, jit_compile, images, num_samples, batch_size, precision="float32"):
    """Seconds (wall and CPU) per 1000 images of the k-sample NLL, after compiling; of
    the model's float32 copy unless `precision` is "trained" (as tools.evaluate)."""
    import keras

    from tfvae import evaluate
    from tfvae.export import float32_copy

    keras.utils.set_random_seed(0)
    model = build(options, jit_compile)
    if precision == "float32":
        model = float32_copy(model)
    batch_size = min(batch_size, len(images["images"] if model.num_classes else images))
    # Compile on one batch with the same shapes (k is static in the compiled call).
    evaluate.importance_sampled_log_px(model, rows(images, batch_size), num_samples,
                                       batch_size, jit_compile=jit_compile, verbose=0)
    cpu = time.process_time()
    estimate = evaluate.importance_sampled_log_px(
        model, images, num_samples, batch_size, jit_compile=jit_compile, verbose=0)
    cpu = time.process_time() - cpu
    count = len(estimate.values)
    return {"s_per_1000_images": 1000 * estimate.seconds / count,
            "cpu_s_per_1000_images": 1000 * cpu / count,
            "minutes_for_10000_images": 10_000 * estimate.seconds / count / 60,
            "images": count, "num_samples": num_samples,
            "compute_dtypes": sorted({layer.compute_dtype
                                      for layer in model._flatten_layers()})}


def table(results, machine, label):
    settings = list(results)
    gpus = ", ".join(machine["gpus"]) or "none"
    peaks = machine["matmul_tflop_per_s"]
    lines = [f"machine: {machine['cpu']}, {machine['cpu_cores']} cores, "
             f"TensorFlow {machine['tensorflow']}, GPU: {gpus}",
             f"matmul 2048x2048 in this run: float32 {peaks['float32']:.2f} TFLOP/s, "
             f"bfloat16 {peaks['bfloat16']:.2f} TFLOP/s",
             f"model: {label}",
             "NLL: " + ("of the float32 copy, as tools.evaluate computes it"
                        if FLAGS.nll_precision == "float32" else "in each policy"), "",
             "| measurement | " + " | ".join(settings) + " |",
             "| --- |" + " --- |" * len(settings)]
    first = results[settings[0]]
    cores = machine["cpu_cores"]
    rows = [
        ("training images/s (median)", lambda r: f"{r['train']['images_per_s']:,.0f}"),
        ("training GFLOP per image", lambda r: f"{r['train']['gflop_per_image']:.4f}"),
        ("training GFLOP/s achieved", lambda r: f"{r['train']['gflop_per_s']:,.0f}"),
        ("training CPU s per 1000 images", lambda r:
         f"{r['train']['cpu_s_per_1000_images']:.3f}"),
        (f"NLL k={first['nll']['num_samples']}: s per 1000 images",
         lambda r: f"{r['nll']['s_per_1000_images']:.1f}"),
        (f"NLL k={first['nll']['num_samples']}: CPU s per 1000 images",
         lambda r: f"{r['nll']['cpu_s_per_1000_images']:.1f}"),
        (f"NLL k={first['nll']['num_samples']}: minutes for 10,000 images",
         lambda r: f"{r['nll']['minutes_for_10000_images']:.1f}"),
        (f"CPU-bound estimate on {cores} idle cores: training images/s",
         lambda r: f"{1000 * cores / r['train']['cpu_s_per_1000_images']:,.0f}"),
        (f"CPU-bound estimate on {cores} idle cores: NLL minutes for 10,000 images",
         lambda r: f"{r['nll']['cpu_s_per_1000_images'] * 10 / cores / 60:.1f}"),
    ]
    for name, cell in rows:
        lines.append(f"| {name} | " + " | ".join(cell(results[s]) for s in settings) + " |")
    return "\n".join(lines)


def run_setting(name, options, jit, precision, images, train_images, nll_images,
                batch_size, epochs):
    """Training and NLL figures of one (jit_compile, precision) setting."""
    import keras

    keras.mixed_precision.set_global_policy(precision)
    try:
        print(f"{name}: training {FLAGS.warmup_epochs}+{epochs} epochs of "
              f"{train_images} images ...", flush=True)
        train = training_throughput(options, jit, rows(images, train_images), batch_size,
                                    FLAGS.warmup_epochs, epochs)
        print(f"{name}: NLL k={FLAGS.num_samples} on {nll_images} images ...",
              flush=True)
        nll = nll_time(options, jit, rows(images, nll_images), FLAGS.num_samples,
                       FLAGS.nll_batch_size, FLAGS.nll_precision)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return {"train": train, "nll": nll}


@cli.interruptible(PROGRAM, "no results were written.",
                 smaller="lower --batch_size or --nll_batch_size")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    import numpy as np

    from tfvae import rundir

    try:
        user_files.check_writable(FLAGS.output)
        options = read_config(FLAGS.config) if FLAGS.config else {}
        build(options, jit_compile=False)  # the config's model builds
    except (ValueError, OSError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    batch_size = FLAGS.batch_size or options.get("batch_size", 100)
    options["steps_per_execution"] = (FLAGS.steps_per_execution
                                      or options.get("steps_per_execution", 20))
    train_images, epochs, nll_images = FLAGS.train_images, FLAGS.epochs, FLAGS.nll_images
    if FLAGS.long:
        train_images, epochs, nll_images = 20_000, 10, 1000
    rng = np.random.default_rng(0)
    images = (rng.random([max(train_images, nll_images), *IMAGE_SHAPE]) < 0.13).astype(
        np.float32)  # about MNIST's fraction of ink
    if options.get("conditional"):
        images = {"images": images, "labels": rng.integers(
            0, NUM_CLASSES, len(images)).astype(np.int32)}
    label = FLAGS.config or "MLP 784-500-500-50, ReLU, Bernoulli, Adam"
    label += (f", batch {batch_size}, "
              f"{options['steps_per_execution']} steps per execution")
    machine = rundir.machine_info()
    machine["matmul_tflop_per_s"] = {dtype: matmul_peak(dtype)
                                     for dtype in ("float32", "bfloat16")}
    results = {}
    for precision in FLAGS.precision:
        for setting in FLAGS.jit:
            jit = JIT_SETTINGS[setting.lower()]
            name = f"jit_compile={jit}, {precision}"
            results[name] = run_setting(name, options, jit, precision, images,
                                        train_images, nll_images, batch_size, epochs)
    print()
    print(table(results, machine, label))
    if FLAGS.output:
        user_files.write_json(FLAGS.output, {"machine": machine, "model": label,
                                             "batch_size": batch_size,
                                             "results": results})
        print("results:", FLAGS.output)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
