"""The teacher / student loop on real data this project did not make, with the V1 Table 9 ablation.

    python benchmarks/bench_self_training.py                       # tiny: vitt at 56 px, CPU, minutes
    python benchmarks/bench_self_training.py --scale gpu           # vits at 266 px on a GPU
    python benchmarks/bench_self_training.py --seeds 0 --student-steps 60 --teacher-steps 80   # a smoke run

1. Teacher: trained on labelled data only, procedural scenes with exact depth
   (pipeline.train.synthetic): the only labelled data there is; the real ground truth is kept
   for scoring.
2. Pseudo-labels: real photographs (benchmarks/real_data.py: scikit-image's and OpenCV's samples,
   short side cut to 4x the crop size, which training resizes to anyway) are imported into a label store, pseudo-labelled by the teacher with the studio's job code
   (pipeline.intake.pseudo_label) and accepted: source `model:teacher`.
3. Students, three seeds per V1 Table 9 row, trained by the recipe on the synthetic labelled set
   and the store's accepted pseudo-labels (1:2): labelled only / + pseudo-labels / + strong
   perturbations (colour jitter, blur, CutMix) / + feature alignment.
4. Scoring, through the studio's comparison code (Store.evidence -> pipeline.evaluation.holdout):
   the Middlebury motorcycle (depth in metres from its calibration, published protocol, 10 m
   cap) and Aloe (disparity, scored in disparity space) are imported as ground truth; each model
   gets AbsRel, delta1, the fitted scale (<= 0 = failed alignment) and the constant and
   image-row-prior baselines on the same pixels.

No DINOv2 weights can be downloaded here and none exist for the tiny encoder: students start from
random weights, and the feature-alignment row aligns to a frozen copy of the teacher's encoder (a
pretrained encoder standing in for DINOv2). Pass --encoder-init / --dinov2 with real DINOv2 files
and --teacher with a released Depth Anything checkpoint (e.g. on a GPU machine with the Hub cache)
to run the paper's recipe. Without apt (no Aloe pair), it runs on the
motorcycle alone and says so; `--require-aloe` makes that an error. Results: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_data  # noqa: E402

PRESETS = {
    "tiny": dict(encoder="vitt", input_size=56, scenes=48, scene_size=64, batch_size=6, teacher_steps=400,
                 student_steps=300, lr=2e-4, device="cpu"),
    "gpu": dict(encoder="vits", input_size=266, scenes=400, scene_size=288, batch_size=16, teacher_steps=3000,
                student_steps=3000, lr=5e-5, device="cuda"),
}
ROWS = {                                                 # V1 Table 9, cumulative
    "labelled only": dict(pseudo_labels=False, feature_alignment=False),
    "+ pseudo-labels": dict(perturbations=False, cutmix=False, feature_alignment=False),
    "+ strong perturbations": dict(feature_alignment=False),
    "+ feature alignment": dict(),
}


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


# ----------------------------------------------------------------------------- data

def prepare(work: Path, cache: Path, p: dict, require_aloe: bool) -> dict:
    """Synthetic labelled scenes, the unlabelled photos and the ground-truth folders under `work`."""
    from PIL import Image

    from pipeline.train.synthetic import write_scenes
    try:
        samples, missing = real_data.opencv_samples(cache), None
    except real_data.Unavailable as e:
        if require_aloe:
            raise
        samples, missing = None, str(e)
        log(f"no Aloe pair and no OpenCV photos: {e}")
    labelled = write_scenes(work / "synthetic", p["scenes"], seed=10, height=p["scene_size"], width=p["scene_size"])
    photos = work / "photos"
    photos.mkdir()
    for name, rgb in real_data.unlabelled_photos(samples):
        im = Image.fromarray(rgb)
        short = 4 * p["input_size"]                 # training resizes the short side to input_size anyway;
        if min(im.size) > short:                    # decoding 1-Mpixel photos every step would dominate
            im = im.resize((round(im.width * short / min(im.size)), round(im.height * short / min(im.size))),
                           Image.BICUBIC)
        im.save(photos / f"{name}.png")
    return {"labelled": labelled, "photos": photos, "gt": real_data.write_ground_truth_folders(work, samples),
            "aloe_missing": missing, "n_photos": len(list(photos.iterdir()))}


# ----------------------------------------------------------------------------- the loop

def run_config(out: Path, p: dict, args, seed: int, **kw):
    from pipeline.train.train_config import TrainConfig
    base = dict(out_dir=str(out), encoder=p["encoder"], input_size=p["input_size"], batch_size=p["batch_size"],
                lr_encoder=p["lr"], decay="linear", warmup_steps=min(20, p["student_steps"] // 10), save_every=10**6,
                log_every=50, device=args.device or p["device"], seed=seed,
                student_init="dinov2" if args.encoder_init else "random", encoder_init=args.encoder_init)
    base.update(kw)
    return TrainConfig(**base)


def train_teacher(data: dict, work: Path, p: dict, args) -> Path:
    from pipeline.train.recipe import train
    cfg = run_config(work / "teacher", p, args, seed=100, data_dir=str(data["labelled"]), steps=p["teacher_steps"],
                     pseudo_labels=False, feature_alignment=False)
    return train(cfg, log=lambda *_: None).checkpoint


def pseudo_label(db: Path, data: dict, teacher: Path, p: dict, args) -> dict:
    """Import the photos, pseudo-label them with the teacher (the studio's job code), accept them;
    then import the real ground truth (after: so it is never pseudo-labelled or trained on)."""
    from pipeline.intake.ground_truth import import_ground_truth
    from pipeline.intake.images import import_paths
    from pipeline.intake.pseudo_label import run_pseudo_label
    from pipeline.predictor import Predictor
    from pipeline.store import Store
    store = Store(db)
    added = import_paths(store, [data["photos"]], author="bench").added
    predictor = Predictor.from_checkpoint(teacher, device=args.device or p["device"], input_size=p["input_size"],
                                          model_id="teacher")
    summary = run_pseudo_label(store, predictor)
    for rec in added:
        store.set_status(rec.id, "accepted", author="bench")
    gt = {kind: import_ground_truth(store, folder, kind=kind, source="middlebury", author="bench")
          for kind, folder in data["gt"].items() if any(folder.iterdir())}
    return {"photos": len(added), "pseudo_labelled": summary.done,
            "ground_truth": {k: len(r.imported) + len(r.unchanged) for k, r in gt.items()}}


def train_student(row: str, seed: int, db: Path, data: dict, teacher: Path, work: Path, p: dict, args) -> Path:
    from pipeline.train.recipe import train
    target = dict(feature_target="dinov2", dinov2=args.dinov2 or str(teacher))
    cfg = run_config(work / f"student-{row.strip('+ ').replace(' ', '-')}-{seed}", p, args, seed=seed, db=str(db),
                     data_dir=str(data["labelled"]), steps=p["student_steps"], **target, **ROWS[row])
    return train(cfg, log=lambda *_: None).checkpoint


def score(checkpoint: Path, items, p: dict, args) -> list[dict]:
    """pipeline.evaluation.holdout's scoring of one model on every ground-truth item."""
    from pipeline.evaluation import holdout as hc
    from pipeline.predictor import Predictor
    predictor = Predictor.from_checkpoint(checkpoint, device=args.device or p["device"], input_size=p["input_size"])
    out = []
    for item in items:
        pred = predictor.predict(item.load_rgb())
        rec = hc.score(pred.array, pred.kind, item, np.asarray(item.load_gt(), dtype=np.float64), item.load_mask())
        out.append({"image": item.name.split(" (#")[0], **{k: rec.get(k) for k in (
            "space", "abs_rel", "delta1", "scale", "shift", "alignment_failed", "n_valid")},
            "baselines": rec["baselines"]})
    return out


# ----------------------------------------------------------------------------- report

def _fmt(x, d=3) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def row_stats(records: list[list[dict]], images: list[str]) -> dict:
    """Per image over seeds: AbsRel mean and min-max of the runs whose alignment succeeded (a failed
    one is left out of the means, as pipeline.evaluation.protocol does), and the failed count; and the count
    of runs that beat both baselines on every image with no failed alignment."""
    stats = {}
    for i, name in enumerate(images):
        ok = [r[i]["abs_rel"] for r in records if not r[i]["alignment_failed"]]
        stats[name] = {"mean": float(np.mean(ok)) if ok else None, "min": min(ok, default=None),
                       "max": max(ok, default=None), "failed": sum(r[i]["alignment_failed"] for r in records),
                       "abs_rel": [r[i]["abs_rel"] for r in records], "scales": [r[i]["scale"] for r in records]}
    stats["beats_both"] = sum(all(not x["alignment_failed"] and x["abs_rel"] < min(
        b["abs_rel"] for b in x["baselines"].values()) for x in r) for r in records)
    return stats


def _cell(st: dict, n: int) -> str:
    if st["mean"] is None:
        return f"all {n} failed"
    spread = f" ({_fmt(st['min'])}–{_fmt(st['max'])})" if n - st["failed"] > 1 else ""
    return f"{_fmt(st['mean'])}{spread}" + (f", {st['failed']} failed" if st["failed"] else "")


def markdown(results: dict) -> str:
    images = results["images"]
    head = "| model | runs | " + " | ".join(f"{n} ({results['spaces'][n]} space) AbsRel" for n in images) + \
           " | beats both baselines |"
    lines = [head, "|" + "---|" * (3 + len(images))]
    base = results["baselines"]
    for name in ("constant", "row_prior"):
        lines.append(f"| baseline: {name.replace('_', ' ')} | – | " + " | ".join(_fmt(base[n][name]) for n in images)
                     + " | – |")
    for row, st in results["rows"].items():
        n = len(results["seeds"]) if row != "teacher" else 1
        lines.append(f"| {row} | {n} | " + " | ".join(_cell(st[i], n) for i in images) + f" | {st['beats_both']} of {n} |")
    return "\n".join(lines)


def verdicts(results: dict) -> list[str]:
    """Claim a gain over 'labelled only' only where no run failed, and the gain exceeds the spread of
    both rows and the row prior is beaten by every run."""
    out, rows, base = [], results["rows"], results["baselines"]
    ref = rows["labelled only"]
    for row in list(ROWS)[1:]:
        for img in results["images"]:
            a, b = rows[row][img], ref[img]
            prior = base[img]["row_prior"]
            if a["failed"] or b["failed"] or a["mean"] is None or b["mean"] is None:
                out.append(f"{row} vs labelled only on {img}: no claim (failed alignments: {a['failed']} vs "
                           f"{b['failed']})")
                continue
            gain, spread = b["mean"] - a["mean"], max(a["max"] - a["min"], b["max"] - b["min"])
            ok = gain > spread and a["max"] < prior
            out.append(f"{row} vs labelled only on {img}: {'GAIN' if ok else 'no claim'} (AbsRel {a['mean']:.3f} vs "
                       f"{b['mean']:.3f}, gain {gain:+.3f}, spread {spread:.3f}, row prior {prior:.3f})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", choices=tuple(PRESETS), default="tiny")
    ap.add_argument("--seeds", default="0,1,2")
    for key in ("teacher_steps", "student_steps", "input_size", "batch_size", "scenes"):
        ap.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core box a second thread makes tiny steps "
                         "10-50x slower)")
    ap.add_argument("--teacher", default=None, help="a trained relative checkpoint to use as the teacher (e.g. "
                                                     "depth-anything-v2-small from the Hub cache) instead of training one")
    ap.add_argument("--encoder-init", default=None, help="DINOv2 weights for the students (else random)")
    ap.add_argument("--dinov2", default=None, help="DINOv2 weights for feature alignment (else the teacher's encoder)")
    ap.add_argument("--cache", type=Path, default=real_data.DEFAULT_CACHE, help="where opencv-doc is unpacked")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--require-aloe", action="store_true", help="fail instead of running without the Aloe pair")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    p = dict(PRESETS[args.scale])
    p.update({k: getattr(args, k) for k in ("teacher_steps", "student_steps", "input_size", "batch_size", "scenes")
              if getattr(args, k) is not None})
    seeds = [int(s) for s in args.seeds.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-self-training-"))
    try:
        results = run(work, p, args, seeds)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(results))
    print("\n".join(verdicts(results)))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


def run(work: Path, p: dict, args, seeds: list[int]) -> dict:
    from pipeline.evaluation import holdout as hc
    from pipeline.store import Store
    t0 = time.perf_counter()
    data = prepare(work, args.cache, p, args.require_aloe)
    log(f"data: {p['scenes']} synthetic scenes, {data['n_photos']} unlabelled photos")
    if args.teacher:
        from pipeline.weights.loading import load_model, save_checkpoint
        teacher = save_checkpoint(load_model(args.teacher).model, work / "teacher.safetensors", model_id="teacher")
        log(f"teacher: {args.teacher}")
    else:
        teacher = train_teacher(data, work, p, args)
        log(f"teacher trained ({p['teacher_steps']} steps)")
    db = work / "store.db"
    store_info = pseudo_label(db, data, teacher, p, args)
    items, _ = hc.evidence_items(Store(db), 1.0)                   # the ground truth only: photos are model labels
    log(f"store: {store_info}; scoring on {[i.name for i in items]}")
    records = {"teacher": [score(teacher, items, p, args)]}
    for row in ROWS:
        records[row] = []
        for seed in seeds:
            ckpt = train_student(row, seed, db, data, teacher, work, p, args)
            records[row].append(score(ckpt, items, p, args))
            log(f"{row} seed {seed}: " + ", ".join(f"{r['image']} {r['abs_rel']:.3f} (scale {r['scale']:.3g})"
                                                    for r in records[row][-1]))
    images = [r["image"] for r in records["teacher"][0]]
    baselines = {r["image"]: {k: v["abs_rel"] for k, v in r["baselines"].items()} for r in records["teacher"][0]}
    return {"preset": p, "seeds": seeds, "images": images, "spaces": {r["image"]: r["space"] for r in records["teacher"][0]},
            "baselines": baselines, "store": store_info, "aloe_missing": data["aloe_missing"],
            "rows": {row: row_stats(recs, images) for row, recs in records.items()}, "records": records,
            "minutes": round((time.perf_counter() - t0) / 60, 1), "args": {k: str(v) for k, v in vars(args).items()}}


if __name__ == "__main__":
    sys.exit(main())
