"""Build the Aquarium detection dataset (Roboflow, CC BY 4.0) in Ultralytics YOLO format for the benchmarks.

Source: the Roboflow "Aquarium Combined - v2 raw-1024" export (YOLO v5 PyTorch txt labels, 638 images, 7 classes) as
kept in github.com/sumit2011/underwater-object-detection under ``dataset/aquarium_pretrain`` (pinned: SOURCE_COMMIT).
``--source`` is either that repository's bare git directory (a mirror; read with ``git archive`` at ``--commit``) or a
folder that holds ``train/ valid/ test/`` (each ``images/ labels/``), e.g. an unpacked copy of the export.

What it writes under ``--out`` (default: the ``aquarium`` folder next to this script, whose committed ``data.yaml``,
``LICENSE`` and ``PROVENANCE.txt`` it leaves alone and copies to any other ``--out``); ``images/`` and ``labels/`` are
deleted and rewritten:

  images/{train,val}/<name>.jpg   longest side at most --max-side (default 352) px, JPEG --quality (default 85)
  labels/{train,val}/<name>.txt   the source's normalised YOLO rows, class ids unchanged (fish=0 ... stingray=6)

Split: the export's train -> train (448 images); its valid (127) and test (63) -> val (190). Names drop Roboflow's
suffixes (``IMG_2274_jpeg_jpg.rf.<hash>.jpg`` -> ``IMG_2274.jpg``). Degenerate boxes (either side under --min-box px
at the source resolution) are dropped: two zero-area shark boxes and one 1 x 1 px fish box at the pinned commit. The
one image without boxes (IMG_3133, rocks and water, no animals) is kept as a background image with an empty label file.
The same source and Pillow build give byte-identical files.

  python benchmarks/datasets/build_aquarium.py --source <mirror>/sumit2011+underwater-object-detection/repo
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path

from PIL import Image

SOURCE_REPO = "github.com/sumit2011/underwater-object-detection"
SOURCE_COMMIT = "eee4be3324cd019b9032bb13f22a756a77866503"
SOURCE_DIR = "dataset/aquarium_pretrain"
COMMITTED = Path(__file__).resolve().parent / "aquarium"  # data.yaml, LICENSE, PROVENANCE.txt
NAMES = ["fish", "jellyfish", "penguin", "puffin", "shark", "starfish", "stingray"]
SPLITS = {"train": ["train"], "val": ["valid", "test"]}  # our split -> the export's splits


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="bare git dir of the source repository, or a folder with train/ valid/ test/")
    parser.add_argument("--commit", default=SOURCE_COMMIT, help="commit to read when --source is a git dir")
    parser.add_argument("--out", type=Path, default=COMMITTED)
    parser.add_argument("--max-side", type=int, default=352, help="longest image side in px (never upscaled)")
    parser.add_argument("--quality", type=int, default=85, help="JPEG quality")
    parser.add_argument("--min-box", type=float, default=2.0, help="drop boxes with a side under this many source px")
    return parser


def clean_name(filename: str) -> str:
    """``IMG_8496_MOV-0_jpg.rf.98652453.jpg`` -> ``IMG_8496_MOV-0``."""
    return re.sub(r"_(jpeg_jpg|jpg)$", "", filename.split(".rf.")[0])


def export_from_git(git_dir: Path, commit: str, dest: Path) -> Path:
    """Unpack SOURCE_DIR of ``commit`` from a bare repository into ``dest``; returns the unpacked folder."""
    tar = subprocess.run(["git", "--git-dir", str(git_dir), "archive", "--format=tar", commit, SOURCE_DIR],
                         check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    return dest / SOURCE_DIR


def read_labels(path: Path, size: tuple[int, int], min_box: float) -> tuple[list[str], int]:
    """The label rows of one image, normalised floats re-printed with 6 decimals; returns (rows, dropped)."""
    rows, dropped = [], 0
    w, h = size
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        cls, *box = line.split()
        x, y, bw, bh = map(float, box)
        if not 0 <= int(cls) < len(NAMES):
            raise ValueError(f"{path}: class {cls} outside 0..{len(NAMES) - 1}")
        if bw * w < min_box or bh * h < min_box:
            dropped += 1
            continue
        if min(x - bw / 2, y - bh / 2) < -1e-6 or max(x + bw / 2, y + bh / 2) > 1 + 1e-6:
            raise ValueError(f"{path}: box outside the image: {line}")
        rows.append(f"{int(cls)} {x:.6f} {y:.6f} {bw:.6f} {bh:.6f}")
    return rows, dropped


def convert(src: Path, out: Path, max_side: int, quality: int, min_box: float) -> dict:
    """Write images/ and labels/ under ``out``; returns counts and box statistics."""
    for sub in ("images", "labels"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for cache in out.glob("**/*.cache"):
        cache.unlink()
    stats: dict = {"images": {}, "boxes": {}, "per_class": [0] * len(NAMES), "dropped": 0, "empty": [],
                   "side320": []}
    for split, sources in SPLITS.items():
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        n_images = n_boxes = 0
        for source in sources:
            for image_path in sorted((src / source / "images").glob("*.jpg")):
                name = clean_name(image_path.name)
                if (out / "images" / split / f"{name}.jpg").exists():
                    raise ValueError(f"two source images map to {name}")
                if image_path.read_bytes()[:3] != b"\xff\xd8\xff":
                    raise ValueError(f"{image_path} is not JPEG data (a Git LFS pointer?)")
                with Image.open(image_path) as image:
                    if image.getexif().get(0x0112, 1) != 1:
                        raise ValueError(f"{image_path}: EXIF orientation set; labels would not match")
                    image = image.convert("RGB")
                    size = image.size
                    scale = min(1.0, max_side / max(size))
                    if scale < 1:
                        image = image.resize((round(size[0] * scale), round(size[1] * scale)), Image.LANCZOS)
                    image.save(out / "images" / split / f"{name}.jpg", "JPEG", quality=quality, optimize=True,
                               subsampling=2)
                rows, dropped = read_labels(src / source / "labels" / f"{image_path.stem}.txt", size, min_box)
                (out / "labels" / split / f"{name}.txt").write_text("".join(f"{row}\n" for row in rows))
                stats["dropped"] += dropped
                if not rows:
                    stats["empty"].append(f"{split}/{name}")
                s320 = 320 / max(size)
                for row in rows:
                    cls, _, _, bw, bh = row.split()
                    stats["per_class"][int(cls)] += 1
                    stats["side320"].append((float(bw) * size[0] * s320 * float(bh) * size[1] * s320) ** 0.5)
                n_images += 1
                n_boxes += len(rows)
        stats["images"][split], stats["boxes"][split] = n_images, n_boxes
    return stats


def main(args: argparse.Namespace) -> None:
    source = args.source.resolve()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if (source / "objects").is_dir() and (source / "HEAD").is_file():  # a bare git directory
            src = export_from_git(source, args.commit, Path(tmp))
            print(f"source: {SOURCE_REPO} @ {args.commit} ({SOURCE_DIR})")
        else:
            src = source
            print(f"source: folder {src}")
        stats = convert(src, out, args.max_side, args.quality, args.min_box)
    if out != COMMITTED:
        for name in ("data.yaml", "LICENSE", "PROVENANCE.txt"):
            shutil.copyfile(COMMITTED / name, out / name)
    sides = sorted(stats["side320"])
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    print(f"images {stats['images']}  boxes {stats['boxes']}  dropped degenerate boxes {stats['dropped']}")
    print("boxes per class: " + ", ".join(f"{n} {c}" for n, c in zip(NAMES, stats["per_class"])))
    print(f"images without boxes (kept as background): {stats['empty']}")
    q = statistics.quantiles(sides, n=10)
    print(f"box side sqrt(w*h) at 320 px: median {statistics.median(sides):.1f}, p10 {q[0]:.1f}, p90 {q[-1]:.1f}")
    print(f"{out}: {size_mb:.2f} MB")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
