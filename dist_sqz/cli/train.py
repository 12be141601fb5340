"""`dist-sqz train`: one training run, under torchrun, mpirun or horovodrun, or alone."""

from __future__ import annotations

import argparse

from dist_sqz.cli import add_config_flags, config_from_args

HELP = "one training run (under torchrun, mpirun or horovodrun, or alone)"


def add(sub: argparse._SubParsersAction) -> None:
    from dist_sqz.config import TrainConfig

    p = sub.add_parser(
        "train",
        help=HELP,
        description=(
            "One data-parallel training run with exact per-step accounting of the bytes and "
            "time of gradient exchange. Launch it under torchrun, mpirun or horovodrun; alone it "
            "is a single worker. Settings come from the defaults, then --config FILE, then "
            "flags and --set key=value (later wins)."
        ),
        epilog="example: torchrun --standalone --nproc-per-node 2 -m dist_sqz train "
        "--model squeezenet1_1 --steps 20",
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from checkpoints/last.pt, or from an earlier "
        "checkpoint kept beside it (RUN_DIR/checkpoints/step<S>.pt; --keep-checkpoints)",
    )
    add_config_flags(p, TrainConfig)


def resume_line(where: str, step: int) -> str:
    """Which checkpoint a resumed run continues from, and the others kept beside it."""
    from dist_sqz.training import checkpoint

    path = checkpoint.resume_file(where)
    others = [
        (s, p) for s, p in checkpoint.kept(checkpoint.run_dir_of(where)) if p.name != path.name
    ]
    also = "; also kept: " + ", ".join(f"{p.name} (step {s})" for s, p in others) if others else ""
    return f"dist-sqz: resuming from {path} (step {step}){also}"


def run(args: argparse.Namespace) -> int:
    from dist_sqz.comm.env import is_main_process
    from dist_sqz.config import TrainConfig
    from dist_sqz.training import checkpoint
    from dist_sqz.training.trainer import Trainer

    ckpt = checkpoint.load(args.resume) if args.resume else None
    under = [ckpt["config"]] if ckpt else []
    cfg = config_from_args(TrainConfig, args, *under)
    if args.resume:
        run_dir = str(checkpoint.run_dir_of(args.resume))
        cfg = TrainConfig.build(cfg.to_dict(), {"out": run_dir})
        if is_main_process():
            print(resume_line(args.resume, ckpt["step"]), flush=True)
    restarted = False
    if ckpt is None and cfg.out and checkpoint.same_launch(cfg.out):
        # torchrun restarted this job's workers (--max-restarts; also on the nodes whose own
        # workers did not fail, where TORCHELASTIC_RESTART_COUNT stays 0): every worker picks
        # the run up from its last checkpoint, as `--resume OUT` would.
        restarted = True
        if checkpoint.checkpoint_path(cfg.out).exists():
            ckpt = checkpoint.load(cfg.out)
            cfg = config_from_args(TrainConfig, args, ckpt["config"])
        if is_main_process():
            where = f"from step {ckpt['step']}" if ckpt else "from the start (no checkpoint yet)"
            print(f"dist-sqz: elastic restart: resuming {cfg.out} {where}", flush=True)
    Trainer(cfg, resume=ckpt, restarted=restarted).run()
    return 0
