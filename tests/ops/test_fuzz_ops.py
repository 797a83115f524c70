"""Fuzzing the ops through ORT (issue 17): single-op models with random and extreme attributes (0, 1, 2**31,
2**62, INT64_MAX, negatives, lists of the wrong length, attributes of the wrong ONNX type) and random frame, state
and change-map shapes. Every case must end in a clean error (an ORT exception naming the node) or in outputs
equal to the numpy reference (python/deltaonnx/reference/) over a short sequence of frames.

Cases run in batches in child processes with a time limit, so a crash or a hang fails the test instead of
killing pytest; a failing batch is re-run case by case to name the culprit with its exact attributes. The cases
are seeded (FUZZ_SEED, FUZZ_CASES override the defaults) and the whole test stays within a couple of minutes."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from builders import DOMAIN
from conftest import IMPORT_PATH

INT64_MAX = 2**63 - 1
EXTREME_INTS = [0, 1, 2, 3, 2**31, 2**62, INT64_MAX, -1, -(2**31), -(2**63)]
NODE = "fuzzed_node"
CASE_SECONDS = 30  # one case alone (the re-run that names a culprit)


# ------------------------------------------------------------------ the cases (plain JSON, so a child can run them)


def _int_list(rng, normal, wild, n=2):
    """An int-list attribute: sane, or (with probability `wild`) extreme, the wrong length or the wrong type."""
    if rng.random() >= wild:
        return [int(rng.choice(normal)) for _ in range(n)]
    roll = rng.random()
    if roll < 0.55:
        return [int(rng.choice(normal + EXTREME_INTS)) for _ in range(n)]
    if roll < 0.75:
        return [int(rng.choice(normal)) for _ in range(int(rng.choice([0, 1, 3, 5])))]
    if roll < 0.9:
        return [float(rng.choice(normal)) for _ in range(n)]  # FLOATS instead of INTS
    return int(rng.choice(normal))  # INT instead of INTS


def _float_attr(rng, normal, wild):
    if rng.random() >= wild:
        return float(rng.choice(normal))
    if rng.random() < 0.6:
        return float(rng.choice([-1.0, float("nan"), float("inf"), -0.0, 1e30]))
    return [1, "0.5", [0.1]][int(rng.integers(3))]  # INT, STRING or FLOATS instead of FLOAT


def _window_attrs(rng, pool, wild):
    attrs = {}
    if pool or rng.random() < 0.5:
        attrs["kernel_shape"] = _int_list(rng, [1, 2, 3], wild)
    if rng.random() < 0.7:
        attrs["strides"] = _int_list(rng, [1, 2], wild)
    if rng.random() < 0.5:
        attrs["dilations"] = _int_list(rng, [1, 2], wild)
    if rng.random() < 0.6:
        attrs["pads"] = _int_list(rng, [0, 1], wild, n=4)
    if rng.random() < 0.2:
        attrs["auto_pad"] = str(rng.choice(["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])) if rng.random() >= wild \
            else ["same", "", 1][int(rng.integers(3))]
    if rng.random() < 0.4:
        attrs["threshold"] = _float_attr(rng, [0.0, 0.0, 0.1, 1.0], wild)
    if rng.random() < 0.2:
        attrs["dense_fraction"] = _float_attr(rng, [0.0, 0.5, 1.0], wild)
    return attrs


def _shape(rng, channels):
    """[N, C, H, W]: mostly small and valid, sometimes empty."""
    n = int(rng.choice([1, 1, 1, 2, 0]))
    h, w = (int(v) for v in rng.choice([0, 1, 2, 5, 7, 9], size=2)) if rng.random() < 0.2 \
        else (int(v) for v in rng.integers(3, 12, size=2))
    return [n, channels, h, w]


def _state_and_map(rng, case):
    case["state"] = str(rng.choice(["carried", "carried", "carried", "empty", "wrong_shape", "rank3"]))
    case["map"] = str(rng.choice(["none", "none", "exact", "wrong_shape"]))
    case["frames"] = int(rng.integers(2, 4))
    case["resize_at"] = int(rng.integers(1, case["frames"])) if rng.random() < 0.15 else -1


def make_case(rng, index):
    op = str(rng.choice(["DeltaConv", "DeltaConv", "DeltaPool", "DeltaMapUnion"]))
    case = {"index": index, "op": op, "seed": int(rng.integers(2**31))}
    if op == "DeltaMapUnion":
        case["map_shapes"] = [_shape(rng, 1) for _ in range(int(rng.integers(1, 4)))]
        if rng.random() < 0.6:  # mostly one shape, as the converter wires it
            case["map_shapes"] = [case["map_shapes"][0]] * len(case["map_shapes"])
        return case
    wild = float(rng.choice([0.0, 0.35]))  # half the cases valid (they exercise shapes, states and maps)
    attrs = _window_attrs(rng, op == "DeltaPool", wild)
    if op == "DeltaPool":
        if rng.random() < 0.3:
            attrs["ceil_mode"] = int(rng.choice([0, 1])) if rng.random() >= wild else [2, -1, 1.5][int(rng.integers(3))]
        if rng.random() < 0.1 * wild:
            attrs["storage_order"] = 1
        case["x_shape"] = _shape(rng, int(rng.integers(1, 5)) if rng.random() < 0.95 else 0)
    else:
        group = int(rng.choice([1, 1, 1, 2, 4])) if rng.random() >= wild / 3 else int(rng.choice(EXTREME_INTS))
        if group != 1 or rng.random() < 0.2:
            attrs["group"] = group if rng.random() >= wild / 3 else float(group)
        channels = 4 if group not in (1, 2, 4) else group * int(rng.integers(0 if rng.random() < 0.05 else 1, 3))
        case["x_shape"] = _shape(rng, channels)
        kernel = attrs.get("kernel_shape")
        k = kernel if isinstance(kernel, list) and len(kernel) == 2 and all(type(v) is int and 0 < v < 6 for v in kernel) \
            else [3, 3]
        m = max(1, group if 0 < group < 8 else 1) * int(rng.integers(1, 4))
        per_group = channels // group if 0 < group <= channels else channels
        case["w_shape"] = [m, per_group, *k] if rng.random() >= wild / 3 else [m, per_group + 1, *k]
        case["bias"] = bool(rng.random() < 0.7)
        if rng.random() < 0.3:
            attrs["activation"] = str(rng.choice(["Relu", "LeakyRelu", "Clip", "Sigmoid", "SiLU", "HardSwish",
                                                  "PRelu", "Softmax", "Gelu", "relu"])) if rng.random() >= wild / 3 else 1
            if rng.random() < 0.5:
                attrs["activation_params"] = [float(v) for v in rng.choice([0.1, 0.0, 6.0, float("nan")],
                                                                          size=int(rng.integers(0, 4)))] \
                    if rng.random() >= wild / 2 else [1, 2]
        case["drop_reference"] = bool(rng.random() < 0.15)
        # DeltaConv's sum input (docs/ops.md#the-sum-input), from a draw of its own (the other draws stay as they were)
        case["sum"] = str(np.random.default_rng(case["seed"] + 7).choice(
            ["none", "none", "none", "ok", "ok", "wrong_shape", "no_map"]))
    case["attrs"] = attrs
    _state_and_map(rng, case)
    return case


def make_resize_case(rng, index):
    """DeltaResize (docs/ops.md#deltaresize): factors sane or extreme, either layout or a bad one, any state and map."""
    wild = float(rng.choice([0.0, 0.35]))
    attrs = {"factors": _int_list(rng, [1, 2, 3], wild)}
    if rng.random() < 0.8:
        attrs["layout"] = str(rng.choice(["nchw", "blocked"])) if rng.random() >= wild \
            else ["NCHW", 1, "blocked_out"][int(rng.integers(3))]
    case = {"index": index, "op": "DeltaResize", "seed": int(rng.integers(2**31)), "attrs": attrs,
            "x_shape": _shape(rng, int(rng.choice([16, 32, 8, 3])))}
    _state_and_map(rng, case)
    return case


def make_cases(seed, count):
    rng = np.random.default_rng(seed)
    cases = [make_case(rng, i) for i in range(count)]
    resize_rng = np.random.default_rng(seed + 1)  # a draw of its own, so the other cases stay as they were
    return cases + [make_resize_case(resize_rng, count + i) for i in range(count // 10)]


# ------------------------------------------------------------------ running one case (in the child process)


def _model(case):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(case["seed"])
    floats = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, None)  # noqa: E731
    maps = lambda name: helper.make_tensor_value_info(name, TensorProto.UINT8, None)  # noqa: E731
    inits = []
    if case["op"] == "DeltaMapUnion":
        names = [f"map{i}" for i in range(len(case["map_shapes"]))]
        node = helper.make_node("DeltaMapUnion", names, ["y"], domain=DOMAIN, name=NODE)
        inputs, outputs = [maps(n) for n in names], [maps("y")]
    elif case["op"] == "DeltaResize":
        ins = ["x", "y_prev"] + (["map_in"] if case["map"] != "none" else [])
        node = helper.make_node("DeltaResize", ins, ["y", "map_out"], domain=DOMAIN, name=NODE)
        _set_attributes(node, case["attrs"])
        inputs = [floats("x"), floats("y_prev")] + ([maps("map_in")] if case["map"] != "none" else [])
        outputs = [floats("y"), maps("map_out")]
    else:
        conv = case["op"] == "DeltaConv"
        ref = "" if case.get("drop_reference") else "x_ref"
        ins = ["x", "w", "b" if case["bias"] else "", ref, "y_prev"] if conv else ["x", ref, "y_prev"]
        if case["map"] != "none" or case.get("drop_reference"):
            ins.append("map_in")
        summed = conv and case.get("sum", "none") != "none"
        if summed:  # Z (and map_z, unless the case leaves it out)
            ins = ins + [""] * (6 - len(ins)) + ["z"] + ([] if case["sum"] == "no_map" else ["map_z"])
        outs = ["y", "x_ref_next" if ref else "", "map_out"]
        node = helper.make_node(case["op"], ins, outs, domain=DOMAIN, name=NODE)
        _set_attributes(node, case["attrs"])
        inputs = [floats(n) for n in ins if n in ("x", "x_ref", "y_prev", "z")]
        inputs += [maps(n) for n in ins if n in ("map_in", "map_z")]
        outputs = [floats("y")] + ([floats("x_ref_next")] if ref else []) + [maps("map_out")]
        if conv:
            inits.append(numpy_helper.from_array(rng.standard_normal(case["w_shape"]).astype(np.float32), "w"))
            if case["bias"]:
                inits.append(numpy_helper.from_array(rng.standard_normal(case["w_shape"][0]).astype(np.float32), "b"))
    graph = helper.make_graph([node], "fuzz", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    return model, {i.name: numpy_helper.to_array(i) for i in inits}


def _set_attributes(node, attrs):
    from onnx import AttributeProto, helper

    for key, value in attrs.items():  # an empty list has no type to infer: the attribute's own
        empty_type = AttributeProto.FLOATS if key == "activation_params" else AttributeProto.INTS
        node.attribute.append(helper.make_attribute(key, value, attr_type=empty_type if value == [] else None))


def _frames(case, rng):
    shape = list(case["x_shape"])
    x = rng.standard_normal(shape).astype(np.float32)
    for t in range(case["frames"]):
        if t == case["resize_at"]:
            shape = shape[:2] + [shape[2] + 1, max(shape[3] - 1, 0)]
            x = rng.standard_normal(shape).astype(np.float32)
        elif t:
            x = x.copy()
            if x.size:  # a local change and a little noise below the usual thresholds
                x[..., : max(1, shape[2] // 3), : max(1, shape[3] // 2)] += 1.0
                x += (0.01 * rng.standard_normal(shape)).astype(np.float32)
        yield x


def _state_feed(case, x, x_ref, y_prev, previous):
    empty = np.zeros((0, 0, 0, 0), np.float32)
    if case["state"] == "empty" or x_ref is None:
        x_ref, y_prev = empty, empty
    elif case["state"] == "wrong_shape":
        x_ref, y_prev = x_ref, np.zeros([d + 1 for d in y_prev.shape], np.float32)
    elif case["state"] == "rank3":
        x_ref = x_ref.reshape((-1,) + x_ref.shape[2:]) if x_ref.size else np.zeros((0, 0, 0), np.float32)
    feed = {"x": x, "y_prev": y_prev}
    if not case.get("drop_reference"):
        feed["x_ref"] = x_ref
    map_in = None
    if case["map"] != "none" or case.get("drop_reference"):
        if previous is None or previous.shape != x.shape:
            map_in = np.ones((x.shape[0], 1, x.shape[2], x.shape[3]), np.uint8)
        else:
            map_in = (x != previous).any(axis=1, keepdims=True).astype(np.uint8)  # no channels: nothing marked
        if case["map"] == "wrong_shape":
            map_in = np.ones((x.shape[0], 1, x.shape[2] + 1, x.shape[3]), np.uint8)
        feed["map_in"] = map_in
    return feed


def _add_sum(case, weights, feed, rng):
    """Z and map_z for this frame, of the output's shape (that of the reference's output without them; one shape
    off for the "wrong_shape" cases), Z's marks where it changes."""
    from deltaonnx import reference

    try:
        args = dict(case["attrs"], drop_reference=bool(case.get("drop_reference")))
        x_ref = None if case.get("drop_reference") else feed.get("x_ref")
        shape = list(reference.delta_conv(feed["x"], weights["w"], weights.get("b"), x_ref, feed["y_prev"],
                                          feed.get("map_in"), **args)[0].shape)
    except Exception:  # noqa: BLE001 - the op refuses such a case on its own: any Z will do
        shape = [1, 1, 1, 1]
    if case["sum"] == "wrong_shape":
        shape[-1] += 1
    feed["z"] = rng.standard_normal(shape).astype(np.float32)
    if case["sum"] != "no_map":
        feed["map_z"] = (rng.random([shape[0], 1, *shape[2:]]) < 0.3).astype(np.uint8)


def _compare(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, the reference {want.shape}"
    if got.dtype == np.uint8:
        same = np.array_equal(got, want)
    else:
        same = np.allclose(got, want, rtol=1e-4, atol=1e-4, equal_nan=True)
    return "" if same else f"{what}: differs from the reference (max abs {np.nanmax(np.abs(got - want)):.3g})"


def _reference_step(case, weights, feed):
    from deltaonnx import reference

    if case["op"] == "DeltaMapUnion":
        return [reference.map_union(*(feed[f"map{i}"] for i in range(len(case["map_shapes"]))))]
    if case["op"] == "DeltaResize":
        return list(reference.delta_resize(feed["x"], feed["y_prev"], feed.get("map_in"), **case["attrs"]))
    args = dict(case["attrs"], drop_reference=bool(case.get("drop_reference")))
    x_ref = None if case.get("drop_reference") else feed["x_ref"]
    if case["op"] == "DeltaConv":
        return list(reference.delta_conv(feed["x"], weights["w"], weights.get("b"), x_ref, feed["y_prev"],
                                         feed.get("map_in"), feed.get("z"), feed.get("map_z"), **args))
    return list(reference.delta_pool(feed["x"], x_ref, feed["y_prev"], feed.get("map_in"), **args))


def run_case(case, library):
    """'ok', 'error: <message>' (a clean refusal), or 'FAIL: <what went wrong>'."""
    import onnxruntime as ort

    model, weights = _model(case)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1
    options.register_custom_ops_library(library)
    rng = np.random.default_rng(case["seed"] + 1)
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        if case["op"] == "DeltaMapUnion":
            feeds = [{f"map{i}": (rng.random(s) < 0.3).astype(np.uint8) for i, s in enumerate(case["map_shapes"])}]
        else:
            feeds = None
        outputs = None
        x_ref = y_prev = previous = None
        for t, x in enumerate(_frames(case, rng) if feeds is None else feeds):
            feed = x if feeds is not None else _state_feed(case, x, x_ref, y_prev, previous)
            if case["op"] == "DeltaResize":
                feed.pop("x_ref", None)  # its state is Y_prev alone
            if feeds is None and case.get("sum", "none") != "none" and case["op"] == "DeltaConv":
                _add_sum(case, weights, feed, rng)
            outputs = session.run(None, feed)
            try:
                want = _reference_step(case, weights, feed)
            except Exception as error:  # noqa: BLE001 - the op ran what the reference refuses
                return f"FAIL: frame {t}: the op ran, the reference refused: {type(error).__name__}: {error}"
            names = ["y", "x_ref_next", "map_out"] if len(outputs) == 3 else ["y", "map_out"]
            if case.get("drop_reference") and len(want) == 3:
                want = [want[0], want[2]]
            for name, got, expected in zip(names, outputs, want):
                problem = _compare(got, expected, f"frame {t}: {name}")
                if problem:
                    return "FAIL: " + problem
            if feeds is None:
                previous = x
                y_prev = outputs[0]
                x_ref = outputs[1] if len(outputs) == 3 else np.zeros((0, 0, 0, 0), np.float32)
        return "ok"
    except Exception as error:  # noqa: BLE001 - ORT's exception types share no base class but Exception
        message = str(error)
        if type(error).__module__.startswith("onnxruntime") and (NODE in message or DOMAIN in message
                                                                 or _ort_own_check(message)):
            return "error: " + message.splitlines()[0][:300]
        return f"FAIL: unclear error {type(error).__name__}: {message[:300]}"


def _ort_own_check(message):
    """Errors ORT raises itself before our op runs (input ranks and types it knows from the op's schema)."""
    return any(s in message for s in ("Invalid rank for input", "Unexpected input data type",
                                      "Required inputs ", "Invalid input name"))


def child_main():
    """Reads cases (JSON) from stdin; prints one JSON line per case as each starts and ends."""
    import deltaonnx

    library = deltaonnx.library_path()
    # The harness's own test: FUZZ_SELF_TEST=crash|hang|wrong[:index] makes every case (or that one) misbehave.
    sabotage, _, target = os.environ.get("FUZZ_SELF_TEST", "").partition(":")
    for case in json.loads(sys.stdin.read()):
        print(json.dumps({"start": case["index"]}), flush=True)
        hit = sabotage and (not target or int(target) == case["index"])
        if hit and sabotage == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if hit and sabotage == "hang":
            time.sleep(3600)
        outcome = "FAIL: sabotaged" if hit and sabotage == "wrong" else run_case(case, library)
        print(json.dumps({"done": case["index"], "outcome": outcome}), flush=True)


# ------------------------------------------------------------------ the test (parent): batches, time limits, culprits


def run_batch(cases, seconds):
    """{index: outcome} for the cases that finished, and what happened to the child (None when it exited 0)."""
    tests_dir = Path(__file__).resolve().parent
    code = "import os, sys; sys.path[:0] = sys.argv[1].split(os.pathsep); import test_fuzz_ops; test_fuzz_ops.child_main()"
    outcomes, trouble = {}, None
    try:
        done = subprocess.run([sys.executable, "-c", code, os.pathsep.join(IMPORT_PATH)], input=json.dumps(cases),
                              capture_output=True, text=True, timeout=seconds, cwd=tests_dir)
        stdout, stderr = done.stdout, done.stderr
        if done.returncode:
            trouble = f"the child exited with {done.returncode}: {stderr[-1500:]}"
    except subprocess.TimeoutExpired as stop:
        stdout = stop.stdout.decode() if isinstance(stop.stdout, bytes) else (stop.stdout or "")
        trouble = f"hang: no end within {seconds} s"
    for line in stdout.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if "done" in record:
                outcomes[record["done"]] = record["outcome"]
    return outcomes, trouble


def fuzz(cases, batch_size=200, tally=None, batch_seconds=None):
    """Every failing case, as (case, what happened); `tally` (a Counter) counts the outcomes per op. A case that
    fails in its batch is run again alone to name it; after a crash or a hang, the cases not yet run go on."""
    per_case = 10 if os.environ.get("DELTAONNX_SANITIZED") else 2  # seconds; the sanitized build is slower
    batch_seconds = batch_seconds or (lambda n: 60 + per_case * n)  # 60: starting a child on a loaded machine
    pending, failures = list(cases), []
    while pending:
        batch, pending = pending[:batch_size], pending[batch_size:]
        outcomes, trouble = run_batch(batch, batch_seconds(len(batch)))
        suspects = [c for c in batch if outcomes.get(c["index"], "FAIL").startswith("FAIL")]
        unfinished = [c for c in batch if c["index"] not in outcomes]
        if unfinished:  # the first died or hung; the others never ran
            suspects, pending = suspects[:len(suspects) - len(unfinished) + 1], unfinished[1:] + pending
        for case in suspects:
            alone, alone_trouble = run_batch([case], CASE_SECONDS * (5 if per_case > 2 else 1))
            outcome = alone_trouble or alone.get(case["index"])
            if outcome is None or outcome.startswith(("FAIL", "hang", "the child")):
                failures.append((case, outcome))
            elif case["index"] not in outcomes:  # passes alone: what it did to its batch still counts
                failures.append((case, f"in its batch: {trouble}"))
        if tally is not None:
            for case in batch:
                if case["index"] in outcomes:
                    tally[case["op"], outcomes[case["index"]].split(":")[0]] += 1
    return failures


def describe(case):
    keep = {k: v for k, v in case.items() if k not in ("index",)}
    return json.dumps(keep)


@pytest.mark.sanitizer
def test_random_and_extreme_attributes_shapes_and_states_never_crash_hang_or_mislead(cpu_op_library):
    seed = int(os.environ.get("FUZZ_SEED", "17"))
    count = int(os.environ.get("FUZZ_CASES", "500" if os.environ.get("DELTAONNX_SANITIZED") else "1000"))
    tally = collections.Counter()
    failures = fuzz(make_cases(seed, count), tally=tally)
    print("fuzz outcomes:", dict(sorted(tally.items())))  # shown with -s: what the cases ended in
    report = "\n".join(f"case {c['index']}: {what}\n    {describe(c)}" for c, what in failures)
    assert not failures, f"{len(failures)} of {count} cases (seed {seed}) failed:\n{report}"


def test_the_fuzzer_names_a_crash_a_hang_and_a_wrong_result_and_goes_on(monkeypatch):
    """The harness itself: in a batch of six cases, the one that kills its child, never ends or answers wrongly
    is named alone, and every other case still runs."""
    cases = [{"index": i, "op": "DeltaMapUnion", "seed": i, "map_shapes": [[1, 1, 2, 3]] * 2} for i in range(6)]
    for sabotage, seconds, expected in (("crash", 30, "the child exited"), ("hang", 12, "hang"), ("wrong", 30, "FAIL")):
        monkeypatch.setattr(sys.modules[__name__], "CASE_SECONDS", seconds)
        monkeypatch.setenv("FUZZ_SELF_TEST", f"{sabotage}:3")
        tally = collections.Counter()
        failures = fuzz(cases, batch_size=6, tally=tally, batch_seconds=lambda n: seconds)
        assert [(c["index"], what.startswith(expected)) for c, what in failures] == [(3, True)], (sabotage, failures)
        assert tally[("DeltaMapUnion", "ok")] == 5, (sabotage, tally)


@pytest.mark.parametrize("op, x_shape, w_shape, attrs, message", [
    ("DeltaConv", [1, 4, 7, 0], [4, 4, 3, 1], {"kernel_shape": [3, 1], "pads": [0, 0, 0, 1]},  # padding only
     "only its batch may be 0"),
    ("DeltaConv", [1, 0, 7, 5], [4, 0, 3, 3], {"kernel_shape": [3, 3]}, "W must have no empty dimension"),
    ("DeltaPool", [1, 0, 7, 5], None, {"kernel_shape": [2, 2]}, "only its batch may be 0"),  # map_out has pixels
])
def test_an_empty_image_is_refused_not_left_unwritten(cpu_op_library, op, x_shape, w_shape, attrs, message):
    """Found by the fuzzer: these returned Y or map_out unwritten (whatever the allocator held)."""
    case = {"index": 0, "op": op, "seed": 3, "x_shape": x_shape, "w_shape": w_shape, "bias": True, "attrs": attrs,
            "state": "carried", "map": "none", "frames": 2, "resize_at": -1}
    outcome = run_case(case, cpu_op_library)
    assert outcome.startswith("error") and NODE in outcome and message in outcome, outcome


def _issue_case(index, op, attrs, **extra):
    case = {"index": index, "op": op, "seed": index, "attrs": attrs, "state": "carried", "map": "none", "frames": 2,
            "resize_at": -1, "x_shape": [1, 4, 16, 16]}
    if op == "DeltaConv":
        case.update(w_shape=[8, 4, 3, 3], bias=False)
    case.update(extra)
    return case


ISSUE_CASES = [  # issue 17's findings 1, 2, 3 and 5, exactly as reported: (case, the attribute the error names)
    (_issue_case(0, "DeltaConv", {"strides": [2**62, 2**62]}), "strides"),
    (_issue_case(1, "DeltaConv", {"strides": [1, 2**62 + 1]}), "strides"),
    (_issue_case(2, "DeltaConv", {"strides": [2**20, 2**20]}), "strides"),
    (_issue_case(3, "DeltaPool", {"kernel_shape": [2**62, 2], "dilations": [4, 1]}), "kernel_shape"),
    (_issue_case(4, "DeltaPool", {"kernel_shape": [2, 2], "pads": [INT64_MAX] * 4}), "pads"),
    (_issue_case(5, "DeltaConv", {"threshold": 1}), "threshold"),  # an INT where a FLOAT belongs
    (_issue_case(6, "DeltaConv", {"threshold": "0.5"}), "threshold"),
    (_issue_case(7, "DeltaConv", {"activation": 1}), "activation"),
    (_issue_case(8, "DeltaConv", {"activation": "LeakyRelu", "activation_params": [1]}), "activation_params"),
]


def test_the_issue_cases_end_in_an_error_naming_the_attribute(cpu_op_library):
    """Each of them crashed, hung, overwrote memory or ran with a default instead; in a child with a time limit."""
    outcomes, trouble = run_batch([case for case, _ in ISSUE_CASES], 120)
    assert trouble is None, trouble
    for case, attribute in ISSUE_CASES:
        outcome = outcomes[case["index"]]
        assert outcome.startswith("error") and NODE in outcome and f"'{attribute}'" in outcome, (case["attrs"], outcome)


@pytest.mark.sanitizer
@pytest.mark.parametrize("strides, group, channels", [([2**16, 2**16], 1, 16), ([2**16, 1], 1, 4),
                                                      ([3, 2**16], 2, 4), ([2**16, 2**16], 8, 8)])
def test_strides_beyond_the_input_run_and_equal_the_reference(cpu_op_library, strides, group, channels):
    """The largest strides the op definition allows, on a small input (one output along such an axis): they ran
    out of memory in the stride phases (sy * sx planes per channel) before an axis with one output was taken
    at stride 1. Depthwise (group = channels) and grouped convs too; three frames, a change map on the way."""
    case = {"index": 0, "op": "DeltaConv", "seed": 11, "attrs": {"strides": strides, "pads": [1, 1, 1, 1],
                                                                "group": group},
            "state": "carried", "map": "exact", "frames": 3, "resize_at": -1, "x_shape": [1, channels, 9, 9],
            "w_shape": [channels, channels // group, 3, 3], "bias": True}
    assert run_case(case, cpu_op_library) == "ok"
