"""Converted models served by a real Triton Inference Server (the one nvidia-pytriton 0.7.0 bundles: 2.51,
python backend), one sequence per camera, driven over gRPC by tritonclient.

The server runs in its own environment (numpy < 2, made once by prepare_server_venv; DELTAONNX_TRITON_VENV
says where) on 127.0.0.1 ports; it is stopped and its shared memory removed after the module."""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from triton_helpers import clip, pnet_like

import deltaonnx
from deltaonnx.serving import write_triton_repository
from deltaonnx.serving import bundled_server

CI = bool(os.environ.get("CI"))
HELPERS = Path(__file__).resolve().parents[1] / "helpers"


def _require(condition_reason):
    if condition_reason is None:
        return
    if CI and "glibc" not in condition_reason and "x86_64" not in condition_reason:
        pytest.fail(condition_reason)
    pytest.skip(condition_reason, allow_module_level=True)


_require(bundled_server.unsupported_reason())
try:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
except ImportError:
    _require("tritonclient[grpc] is not installed (pip install 'tritonclient[grpc]')")

# 8 cameras: different clips (seeds) and resolutions.
CAMERAS = [(24, 32), (32, 40), (28, 28), (36, 48), (20, 24), (40, 32), (24, 56), (32, 32)]
FRAMES = 10
THRESHOLD = 0.05  # a gate above 0: each stream's outputs depend on its own state, so mixed-up state shows


def _infer(client, model, frame, sequence_id, start=False, end=False, timeout_s=60):
    image = grpcclient.InferInput("image", list(frame.shape), "FP32")
    image.set_data_from_numpy(frame)
    result = client.infer(model, [image], sequence_id=sequence_id, sequence_start=start, sequence_end=end,
                          client_timeout=timeout_s)
    return [result.as_numpy("prob"), result.as_numpy("boxes")]


def _alone(model_path, frames):
    """The same stream run alone through DeltaSession, as the server's instance runs it (1 thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = deltaonnx.DeltaSession(str(model_path), sess_options=options)
    return [session.run(["prob", "boxes"], {"image": frame}, stream="alone") for frame in frames]


def _assert_same(got, want, what):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7, err_msg=what)


@pytest.fixture(scope="module")
def server_venv():
    venv = Path(os.environ.get("DELTAONNX_TRITON_VENV", bundled_server.DEFAULT_VENV))
    try:
        return bundled_server.prepare_server_venv(venv)
    except Exception as error:  # noqa: BLE001 - no network, no pip: the reason is the skip message
        _require(f"cannot prepare the server's environment {venv}: {error}")


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton")
    dense = pnet_like()
    onnx.save(dense, str(root / "pnet.onnx"))
    repo = root / "repo"
    # "cams" gates per pixel: on 24x32 frames 8x8 blocks cover so much that a block-gated stream falls back to
    # its dense twin, whose outputs no longer depend on the state these tests follow. "solo" and "ort" have the
    # default block gate (its change map is no request input).
    write_triton_repository(root / "pnet.onnx", repo, name="cams", instances=2, max_sequences=4,
                            conversion={"threshold": THRESHOLD, "gate": "pixel"})
    write_triton_repository(root / "pnet.onnx", repo, name="solo", instances=1, max_sequences=1,
                            idle_timeout_us=1_000_000, conversion={"threshold": THRESHOLD})
    write_triton_repository(root / "pnet.onnx", repo, name="timed", instances=1, max_sequences=2, debug_timing=True,
                            conversion={"threshold": THRESHOLD, "gate": "pixel"})
    # The onnxruntime repository, loaded with the backend switched to python (the bundled server has no
    # onnxruntime backend): the config is Triton's to validate, the model is run as that backend would.
    written = write_triton_repository(root / "pnet.onnx", repo, name="ort", backend="onnxruntime", max_sequences=1,
                                      conversion={"threshold": THRESHOLD})
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((written.model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    config.backend = "python"
    config.ClearField("default_model_filename")
    (written.model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
    shutil.copyfile(HELPERS / "triton_ort_emulation_model.py", written.model_dir / "1" / "model.py")
    return repo, dense


@pytest.fixture(scope="module")
def server(repository, server_venv):
    repo, _ = repository
    with bundled_server.BundledTritonServer(repo, server_venv) as running:
        yield running
    assert not any(name.startswith(running.shm_prefix) for name in os.listdir("/dev/shm"))


@pytest.fixture
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as connection:
        yield connection


def test_eight_cameras_served_concurrently_each_equal_the_stream_run_alone(server, repository):
    repo, _ = repository
    clips = [clip((1, 3, h, w), FRAMES, seed=10 + i) for i, (h, w) in enumerate(CAMERAS)]
    results: dict[int, list] = {}
    errors = []

    def camera(index):
        try:
            with grpcclient.InferenceServerClient(server.grpc_url) as connection:
                results[index] = [_infer(connection, "cams", frame, 500 + index, start=t == 0,
                                         end=t == len(clips[index]) - 1)
                                  for t, frame in enumerate(clips[index])]
        except Exception as error:  # noqa: BLE001 - reported below with the camera
            errors.append((index, error))

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(len(CAMERAS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and len(results) == len(CAMERAS), errors
    model_path = repo / "cams" / "1" / "model.onnx"
    state_mattered = False
    for index, frames in enumerate(clips):
        for t, (got, want) in enumerate(zip(results[index], _alone(model_path, frames))):
            _assert_same(got, want, f"camera {index} frame {t}")
        state_mattered |= _differs_from_dense(repository[1], frames[-1], results[index][-1])
    assert state_mattered  # the gate kept some state: a stream fed another's state would have shown


def _differs_from_dense(dense_model, frame, outputs) -> bool:
    want = ort.InferenceSession(dense_model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"image": frame})
    return any(not np.allclose(g, w, atol=1e-6) for g, w in zip(outputs, want))


def test_start_restarts_a_sequence_from_empty_state(client, repository):
    repo, _ = repository
    first, second = clip((1, 3, 24, 32), 4, seed=1), [f * 0.98 + 0.01 for f in clip((1, 3, 24, 32), 4, seed=1)]
    for t, frame in enumerate(first):
        _infer(client, "cams", frame, 77, start=t == 0)
    restarted = [_infer(client, "cams", frame, 77, start=t == 0, end=t == len(second) - 1)
                 for t, frame in enumerate(second)]
    model_path = repo / "cams" / "1" / "model.onnx"
    for t, (got, want) in enumerate(zip(restarted, _alone(model_path, second))):
        _assert_same(got, want, f"frame {t} after START")
    continued = _alone(model_path, first + second)[len(first)]
    assert any(not np.allclose(g, c, atol=1e-6) for g, c in zip(restarted[0], continued))  # START changed something


def test_a_client_that_disappears_frees_its_slot_after_the_idle_timeout(client, server, repository):
    """"solo" has one slot and an idle timeout of 1 s. Triton counts a sequence's idle time from the arrival
    of its last request, backlog included: the waiting camera starts 0.5 s after the other vanished, so it
    waits ~0.5 s for the slot and is not itself idle when it gets it (docs/serving.md)."""
    repo, _ = repository
    frames = clip((1, 3, 24, 32), 3, seed=4)
    for t, frame in enumerate(frames[:2]):  # this camera holds the only slot, then vanishes without END
        _infer(client, "solo", frame, 901, start=t == 0)
    time.sleep(0.5)
    began = time.monotonic()
    waited = [_infer(client, "solo", frames[0], 902, start=True)]
    elapsed = time.monotonic() - began
    waited += [_infer(client, "solo", frame, 902, end=t == 2) for t, frame in enumerate(frames) if t > 0]
    assert 0.3 <= elapsed < 30, f"the second camera got the slot after {elapsed:.1f} s (idle timeout 1 s)"
    for t, (got, want) in enumerate(zip(waited, _alone(repo / "solo" / "1" / "model.onnx", frames))):
        _assert_same(got, want, f"frame {t} of the camera served after the timeout")
    with pytest.raises(InferenceServerException, match="START"):  # the vanished camera's sequence is gone
        _infer(client, "solo", frames[2], 901)
    assert server.alive() and client.is_model_ready("solo")


def test_bad_requests_get_an_error_and_the_model_keeps_serving(client, server, repository):
    repo, _ = repository
    frame = clip((1, 3, 24, 32), 1, seed=6)[0]
    with pytest.raises(InferenceServerException, match="(?i)shape|dims"):  # 2 channels: Triton refuses it
        _infer(client, "cams", np.zeros((1, 2, 24, 32), np.float32), 31, start=True)
    with pytest.raises(InferenceServerException, match="(?i)start"):  # a new sequence without START
        _infer(client, "cams", frame, 32)
    # Too small for the convolutions: the model's own error for this request alone (not the stub's for the batch).
    with pytest.raises(InferenceServerException, match="deltaonnx: sequence 33"):
        _infer(client, "cams", np.zeros((1, 3, 4, 4), np.float32), 33, start=True)
    assert server.alive() and client.is_model_ready("cams")
    frames = clip((1, 3, 24, 32), 3, seed=6)
    got = [_infer(client, "cams", f, 33, start=t == 0, end=t == 2) for t, f in enumerate(frames)]
    for t, (g, w) in enumerate(zip(got, _alone(repo / "cams" / "1" / "model.onnx", frames))):
        _assert_same(g, w, f"frame {t} after the bad requests")


def test_debug_timing_adds_where_the_request_went_and_changes_no_output(client, repository):
    repo, _ = repository
    frames = clip((1, 3, 24, 32), 3, seed=8)
    timings = []
    for t, frame in enumerate(frames):
        image = grpcclient.InferInput("image", list(frame.shape), "FP32")
        image.set_data_from_numpy(frame)
        asked = ["prob", "boxes"] + (["DELTAONNX_TIMING"] if t != 1 else [])  # a client may leave it out
        result = client.infer("timed", [image], outputs=[grpcclient.InferRequestedOutput(n) for n in asked],
                              sequence_id=61, sequence_start=t == 0, sequence_end=t == 2)
        want = _alone(repo / "timed" / "1" / "model.onnx", frames[: t + 1])[t]
        _assert_same([result.as_numpy("prob"), result.as_numpy("boxes")], want, f"frame {t}")
        timings.append(result.as_numpy("DELTAONNX_TIMING"))
    assert timings[1] is None
    for timing in (timings[0], timings[2]):
        assert timing.shape == (1, 3) and timing.dtype == np.float64
        run_ms, request_ms, batch = timing[0]
        assert 0 < run_ms <= request_ms < 10_000 and batch == 1  # one camera: one request per execute()


def test_the_onnxruntime_repository_loads_and_serves_with_the_backend_switched_to_python(client, repository):
    """Triton validates its config (implicit state of every past/present pair, START control), the op library
    loads from the path it names, and the START-gated model equals dense ORT on what Triton hands it."""
    _, dense_model = repository
    assert client.is_model_ready("ort")
    dense = ort.InferenceSession(dense_model.SerializeToString(), providers=["CPUExecutionProvider"])
    for t, frame in enumerate(clip((1, 3, 24, 32), 3, seed=2)):
        got = _infer(client, "ort", frame, 41, start=t == 0, end=t == 2)
        for g, w in zip(got, dense.run(None, {"image": frame})):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
