r"""TF Serving's conventions, in numpy: its model folders and its REST predict format.

Model folders: <model_dir>/<version>/saved_model.pb, version an integer; the highest
is served (`newest_version`).

The REST predict format (`POST /v1/models/<name>:predict`), what `tools.serve` reads
and writes, as TF Serving's `json_tensor.cc` does:

    {"signature_name": "log_prob", "instances": [{"images": x_1, "num_samples": 100},
                                                 {"images": x_2, "num_samples": 100}]}
    {"signature_name": "log_prob", "inputs": {"images": [x_1, x_2], "num_samples": 100}}

`signature_name` is optional ("serving_default", which is `sample` in a tfvae export).
Row format ("instances", a non-empty list): one entry per example, an object of all the
signature's inputs, or a plain value when the signature has one input; each input is
stacked along a new batch axis. Columnar format ("inputs"): an object of whole tensors,
or a plain value for a one-input signature. Answers: row format -> {"predictions":
[...]}, one entry per row of the outputs, an object of the outputs when the signature
has several (`sample`: images, z) or the value itself when it has one (`log_prob`);
columnar -> {"outputs": {name: tensor}} (the tensor itself for one output). Floats stay
float32 arrays, which KServe's JSON writer (orjson) prints in their shortest form that
reads back to the same float32, as TF Serving does: a client that reads them as float32
gets the SavedModel's values bit for bit.

Scalar inputs in row format (`num_samples`), our choice: TF Serving stacks them into a
[batch] vector, which a scalar input refuses, so there `sample` and `log_prob` need the
columnar format. Here every row gives the scalar, with the same value, and it is passed
once: `{"signature_name": "sample", "instances": [{"num_samples": 3}]}` draws 3 samples
and answers 3 rows (rows of the outputs, not one per instance). A conditional `sample`
stacks the rows' labels: [{"num_samples": 2, "labels": 1}, {"num_samples": 2,
"labels": 5}] draws one sample of class 1 and one of class 5.

JSON: NaN, Infinity and -Infinity are read as numbers, as TF Serving reads them
(rapidjson's kParseNanAndInfFlag), so that a NaN pixel reaches the SavedModel's check.

Refused here in one line (`checks.InputError`), before the SavedModel runs: a body
that is not a JSON object; both or neither of "instances" and "inputs"; an empty
"instances"; an unknown signature_name; a missing or unknown input (TF Serving ignores
unknown columnar keys; here a misspelt "label" is named); values that are not numbers
(strings, null, true/false, objects); ragged lists; a non-integer for an integer input
(3.0 too, as TF Serving) or one outside its dtype's range; a scalar input given as a
list, or with different values in different rows. Everything else, shapes, NaN, pixel
range, counts and labels, the SavedModel checks, and its one line is the answer
(`saved_model_error`).

Needs numpy only (no TensorFlow, no KServe): specs are (shape, numpy dtype) pairs.
"""

import json
import os

import numpy as np

from tfvae import checks, presets

DEFAULT_SIGNATURE = "serving_default"
FORMATS = ("instances", "inputs")


def newest_version(model_dir):
    """(model folder, its highest integer version folder) of --model_dir; InputError
    in one line when there is none or it holds no SavedModel."""
    if not os.path.isdir(model_dir):
        folder = presets.model_folders().get(model_dir)
        if folder is None:
            names = ", ".join(presets.model_folders()) or "none"
            raise checks.InputError(f"--model_dir {model_dir} is not a folder, nor a "
                                    f"shipped model's name ({names}).")
        model_dir = folder
    found = presets.versions(model_dir)
    layout = "TF Serving's layout: <model_dir>/<version>/saved_model.pb"
    if not found:
        if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
            parent = os.path.dirname(os.path.abspath(model_dir))
            raise checks.InputError(f"--model_dir {model_dir} is a version folder; give "
                                    f"the folder above it, {parent} ({layout}).")
        raise checks.InputError(f"--model_dir {model_dir} holds no integer version "
                                f"folder ({layout}).")
    if not os.path.isfile(os.path.join(found[0], "saved_model.pb")):
        raise checks.InputError(f"{found[0]}, the newest version in {model_dir}, is not "
                                "a SavedModel: it has no saved_model.pb.")
    return model_dir, found[0]


def parse_json(body):
    """The JSON object of a request body (bytes or str), NaN and Infinity allowed."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise checks.InputError(f"the request body is not JSON ({checks.first_line(error)}"
                                "); send a JSON object such as {\"signature_name\": "
                                "\"sample\", \"inputs\": {\"num_samples\": 4}}.") from None
    return payload


def parse_request(payload, signatures):
    """(signature key, {input name: array}, row format?) of a predict request.

    Args:
        payload: the request's JSON value (`parse_json`).
        signatures: {signature key: {input name: (shape, numpy dtype)}}; a shape is a
            tuple with None for a free dimension, () for a scalar.
    """
    if not isinstance(payload, dict):
        raise checks.InputError(
            f"the request is a JSON {type(payload).__name__}, not an object; send "
            "{\"signature_name\": ..., \"instances\": [...]} or {..., \"inputs\": {...}}.")
    key = payload.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(key, str):
        raise checks.InputError(f"signature_name must be a string, got {key!r}.")
    specs = signatures[checks.choice("signature_name", key, sorted(signatures))]
    given = [name for name in FORMATS if name in payload]
    if len(given) != 1:
        has = "both 'instances' and" if given else "neither 'instances' nor"
        raise checks.InputError(f"the request has {has} 'inputs'; give one: 'instances' "
                                "(row format) or 'inputs' (columnar format).")
    if given[0] == "instances":
        return key, _row_inputs(payload["instances"], specs, key), True
    return key, _columnar_inputs(payload["inputs"], specs, key), False


def _named(value, specs, key, where):
    """`value` as {input name: value}: a plain value stands for a one-input signature."""
    if not isinstance(value, dict):
        if len(specs) != 1:
            raise checks.InputError(
                f"{where} is a plain value, but {key} takes {_names(specs)}: give an "
                "object of them.")
        return {next(iter(specs)): value}
    missing = [name for name in specs if name not in value]
    unknown = [name for name in value if name not in specs]
    if missing or unknown:
        problems = ([f"{', '.join(missing)} missing"] if missing else []) + \
            ([f"unknown input {', '.join(map(repr, unknown))}"] if unknown else [])
        raise checks.InputError(f"{where}: {'; '.join(problems)}; {key} takes "
                                f"{_names(specs)}.")
    return value


def _names(specs):
    return ", ".join(f"{name} {_describe(*spec)}" for name, spec in specs.items())


def _describe(shape, dtype):
    dims = "scalar" if not shape else \
        f"[{', '.join('batch' if d is None else str(d) for d in shape)}]"
    return f"({np.dtype(dtype).name} {dims})"


def _row_inputs(instances, specs, key):
    if not isinstance(instances, list) or not instances:
        raise checks.InputError("'instances' must be a non-empty list, one entry per row.")
    rows = [_named(row, specs, key, f"instances[{i}]") for i, row in enumerate(instances)]
    inputs = {}
    for name, (shape, dtype) in specs.items():
        values = [as_array(row[name], name, shape, dtype, batched=False) for row in rows]
        if shape == ():
            if any(v != values[0] for v in values[1:]):
                raise checks.InputError(
                    f"{name} is a scalar: give the same value in every row (or use the "
                    "columnar 'inputs' format).")
            inputs[name] = values[0]
        elif any(v.shape != values[0].shape for v in values[1:]):
            raise checks.InputError(f"the rows' {name} have different shapes; give "
                                    f"every row the same {_describe(shape, dtype)}.")
        else:
            inputs[name] = np.stack(values)
    return inputs


def _columnar_inputs(inputs, specs, key):
    named = _named(inputs, specs, key, "'inputs'")
    return {name: as_array(named[name], name, *specs[name]) for name in specs}


def as_array(value, name, shape, dtype, batched=True):
    """`value` (JSON) as a numpy array of `dtype`; InputError for what the SavedModel
    could not even receive. A `shape` of () wants a scalar; other shapes are left to
    the SavedModel's own check (its message names the expected shape)."""
    dtype = np.dtype(dtype)
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nested lists
        raise checks.InputError(f"{name} is a ragged list (rows of different lengths); "
                                f"give an array {_describe(shape, dtype)}.") from None
    integral = array.dtype.kind in "iu"
    if not (integral or (array.dtype.kind == "f" and dtype.kind == "f")):
        kind = "numbers" if dtype.kind == "f" else "integers"
        raise checks.InputError(f"{name} must hold {kind} ({dtype.name}); got "
                                f"{_first(array)!r}.")
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise checks.InputError(f"{name} must hold {dtype.name} integers "
                                    f"({info.min} to {info.max}), got {_first(array)!r}.")
    if shape == () and array.ndim:
        rows = "" if batched else " in every row"
        raise checks.InputError(f"{name} is a scalar: give one number{rows}, not a list "
                                f"of shape {list(array.shape)}.")
    return array.astype(dtype)


def _first(array):
    """The first entry of `array` that makes it fail (for messages)."""
    flat = array.reshape(-1)
    if array.dtype.kind in "iu" or not flat.size:
        return flat[0].item() if flat.size else None
    if array.dtype.kind == "f":
        return next((v for v in flat.tolist() if not float(v).is_integer()), flat[0].item())
    return next((v for v in flat.tolist() if not isinstance(v, (int, float))
                 or isinstance(v, bool)), flat[0])


def response(outputs, row_format):
    """TF Serving's answer for {output name: array}: row format -> "predictions", one
    entry per row (an object of the outputs when there are several); columnar ->
    "outputs". Arrays stay numpy (float32 written shortest by orjson)."""
    names = sorted(outputs)
    if not row_format:
        return {"outputs": outputs[names[0]] if len(names) == 1
                else {name: outputs[name] for name in names}}
    rows = {len(outputs[name]) for name in names}
    if len(rows) != 1:  # never for a tfvae export: every output is per row
        raise ValueError(f"outputs {names} have different batch sizes {sorted(rows)}; "
                         "use the columnar 'inputs' format.")
    if len(names) == 1:
        return {"predictions": outputs[names[0]]}
    return {"predictions": [{name: outputs[name][i] for name in names}
                            for i in range(rows.pop())]}


def saved_model_error(message):
    """The one line of a SavedModel's InvalidArgumentError `message`: its failed
    assertion ('assertion failed: [images must be float32 in [0, 1]; found NaN]'),
    which is the first line TF Serving returns too, else the first line that is not
    TensorFlow's frame ('Graph execution error:', 'Detected at node ...')."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("assertion failed:"):
            return line
    frame = ("Graph execution error", "Detected at node", "<stack traces unavailable>",
             "[[{{node")
    return next((line for line in lines if not line.startswith(frame)),
                lines[0] if lines else "the SavedModel refused the input")
