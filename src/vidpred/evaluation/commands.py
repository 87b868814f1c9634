"""``vidpred evaluate`` and ``vidpred predict``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="run folder (best.pt, else last.pt) or a checkpoint file")
    p.add_argument("--split", default="test", choices=("train", "validate", "test"),
                   help="split of the run's dataset (default: %(default)s)")
    p.add_argument("--n-past", type=int, default=None, help="observed frames (default: the run's train.n_past)")
    p.add_argument("--n-future", type=int, default=None,
                   help="predicted frames (default: the run's train.n_future)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample noise (default: %(default)s)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--data-root", default=None, help="dataset root (default: the run's data.root)")


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a run: PSNR/SSIM per predicted step, N samples, copy-last-frame baseline",
        description="Predict n_future frames from n_past observed ones (windows from frame 1 of every "
        "sequence), N prior samples per sequence; report first-sample, mean, best and worst PSNR "
        "(10 log10(1/MSE), frames in [0,1]) and SSIM (Gaussian 11, sigma 1.5) per step and averaged, "
        "on the whole frame and on the moving region (pixels where the true frame differs from the last "
        "observed one), beside the copy-last-frame baseline. Deterministic by --seed.",
    )
    _common(p)
    p.add_argument("--samples", type=int, default=5, help="prior samples per sequence (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default: %(default)s)")
    p.add_argument("--max-sequences", type=int, default=None, help="only the first N sequences of the split")
    # default None, resolved in cmd_evaluate: metrics.MOTION_THRESHOLD lives beside torch, not imported to parse flags
    p.add_argument("--motion-threshold", type=float, default=None,
                   help="a pixel of a future frame is in the moving region when some channel differs from the "
                   "last observed frame by more than this, frames in [0, 1]; > 0 and < 1 (default: 0.1)")
    p.add_argument("--compile", action="store_true",
                   help="draw the samples through torch.compile (slower than eager on the 2-core CPU; for GPUs)")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default: RUN/eval_<split>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "predict",
        help="pictures of one sequence: GIF (truth beside prediction), per-step grid PNG, MP4",
        description="Predict one sequence and write an animated GIF (ground truth beside the prediction, "
        "observed frames framed green, predicted ones red), a grid PNG (rows: ground truth, posterior "
        "reconstruction, prior samples; one column per frame) and an MP4 when imageio-ffmpeg is installed.",
    )
    _common(p)
    p.add_argument("--index", type=int, default=0, help="sequence index in the split (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/predict)")
    p.add_argument("--samples", type=int, default=3, help="prior samples in the grid (default: %(default)s)")
    p.add_argument("--actions", type=Path, default=None,
                   help="what-if CSV, no header, at least n_past + n_future rows (row t = step t): 4 columns "
                   "(actions) or 7 (actions and end-effector positions); rows that made the observed frames "
                   "are ignored. On synthetic data the top row shows the simulator's re-run under these "
                   "actions, on other data only the observed frames")
    p.add_argument("--scale", type=int, default=3, help="GIF upscaling factor (default: %(default)s)")
    p.set_defaults(func=cmd_predict)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vidpred.evaluation.evaluate import default_output, evaluate_run, format_table, write_json
    from vidpred.evaluation.metrics import MOTION_THRESHOLD

    threshold = MOTION_THRESHOLD if args.motion_threshold is None else args.motion_threshold
    result = evaluate_run(args.run, split=args.split, samples=args.samples, seed=args.seed, n_past=args.n_past,
                          n_future=args.n_future, batch_size=args.batch_size, max_sequences=args.max_sequences,
                          device=args.device, data_root=args.data_root,
                          progress=False if args.no_progress else None, motion_threshold=threshold,
                          compile=args.compile)
    path = write_json(result, args.out or default_output(args.run, args.split))
    print(format_table(result))
    print(f"wrote {path}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from vidpred.errors import ConfigError
    from vidpred.evaluation.evaluate import predict_run
    from vidpred.reporting.media import mp4_available, write_prediction

    if not 1 <= args.scale <= 16:
        raise ConfigError(f"--scale must be in 1..16, got {args.scale}")
    pred = predict_run(args.run, split=args.split, index=args.index, samples=args.samples, seed=args.seed,
                       n_past=args.n_past, n_future=args.n_future, actions=args.actions, device=args.device,
                       data_root=args.data_root)
    run_dir = args.run.parent if args.run.is_file() else args.run
    paths = write_prediction(pred, args.out or run_dir / "predict", scale=args.scale)
    print(f"{pred['split']} sequence {pred['index']} ({pred['name']}), {pred['n_past']} observed -> "
          f"{pred['truth'].shape[0] - pred['n_past']} predicted frames")
    for kind, path in paths.items():
        print(f"  {kind:5s} {path}")
    if not mp4_available():
        print("  (no MP4: install imageio-ffmpeg, e.g. pip install 'vidpred[video]')")
    return 0
