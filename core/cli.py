"""The ``selfsup`` command line.

    selfsup train PIPELINE [key.path=value ...]     train a pipeline (YAML)
    selfsup train --resume RUN_DIR [overrides]      continue a stopped run
    selfsup eval RUN_DIR                            evaluate a run's representation
    selfsup embed RUN_DIR DATA --out E.npy          embeddings of any data with a run's encoder
    selfsup plugins list [KIND] [PATTERN]           registered components
    selfsup plugins show KIND NAME                  one component's parameters
    selfsup plugins check [PACKAGE]                 the conformance kit, pass/fail table
    selfsup new-plugin NAME [--dir DIR]             a plugin package skeleton
    selfsup config show PIPELINE [overrides]        the resolved pipeline
    selfsup study STUDY.yaml [--minutes M] [--jobs N]  variants x seeds of a pipeline, tabulated
    selfsup bench NAME [args]                       a registered benchmark
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .embed_cli import add_parser as add_embed_parser
from .errors import SelfsupError
from .plugin_commands import add_parsers as add_plugin_parsers
from .plugin_commands import warn_plugin_failures
from .study.cli import add_parser as add_study_parser

EXIT_USER_ERROR = 2


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import apply_overrides, load_pipeline
    from .console import ConsoleReporter
    from .engine import build_trainer, load_run_config
    from .engine.pipeline import check_resume_overrides

    warn_plugin_failures()  # a broken third-party plugin is named before its components are missed
    overrides = list(args.overrides)
    if args.resume:
        if args.overwrite:
            raise SelfsupError("--resume continues the run in its folder and --overwrite replaces it; use one.")
        if args.pipeline and "=" in args.pipeline:
            overrides.insert(0, args.pipeline)
        elif args.pipeline:
            raise SelfsupError(
                f"--resume continues {args.resume} with its own config.yaml; the pipeline file {args.pipeline} would "
                "not be used. Drop it (key=value overrides of resumable keys are applied), or start a fresh run "
                "from it with another --run-dir."
            )
        check_resume_overrides(overrides)
        cfg = apply_overrides(load_run_config(Path(args.resume)), overrides)
        trainer = build_trainer(cfg, run_dir=Path(args.resume))
    else:
        if not args.pipeline:
            raise SelfsupError("selfsup train needs a PIPELINE file (or --resume RUN_DIR).")
        cfg = load_pipeline(args.pipeline, overrides)
        trainer = build_trainer(cfg, run_dir=Path(args.run_dir) if args.run_dir else None)
    trainer.add_callback(ConsoleReporter(progress=trainer.settings.trainer.progress))
    trainer.fit(resume=bool(args.resume), overwrite=args.overwrite)
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .config import apply_overrides
    from .console import format_results
    from .engine import build_trainer, load_run_config
    from .engine import EVAL_BEFORE_NAME

    run_dir = Path(args.run_dir)
    keys = [item.split("=", 1)[0] for item in args.overrides]
    refused = [k for k in keys if not (k.startswith("eval.") or k in ("trainer.device", "trainer.precision"))]
    if refused:
        raise SelfsupError(f"selfsup eval can change eval.*, trainer.device and trainer.precision only, not "
                           f"{', '.join(refused)}: the checkpoint holds the rest.")
    trainer = build_trainer(apply_overrides(load_run_config(run_dir), args.overrides), run_dir=run_dir)
    trainer.load_checkpoint()
    before = None
    if (run_dir / EVAL_BEFORE_NAME).exists():
        before = json.loads((run_dir / EVAL_BEFORE_NAME).read_text())
        print(f"random init: {format_results(before)}")
    result = trainer.finish(before)
    print(f"trained:     {format_results(result.after)}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from .config import load_pipeline
    from .engine.pipeline import resolved_config
    from .engine.settings import settings_from_config

    cfg = load_pipeline(args.pipeline, args.overrides)
    print(OmegaConf.to_yaml(OmegaConf.create(resolved_config(cfg, settings_from_config(cfg)))), end="")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .plugin_manager import default_registry

    registry = default_registry()
    if not args.name:
        for entry in registry.list("benchmark"):
            print(f"  {entry.name:<12} {entry.summary}  [{entry.provider}]")
        return 0
    return int(registry.get("benchmark", args.name).factory(list(args.args)) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup",
        description="Representation learning by similarity: train, evaluate and inspect pipelines.",
        epilog="Example: selfsup train examples/moco_digits.yaml optim.lr=0.1 trainer.epochs=5",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a pipeline", description="Train a pipeline from a YAML file; "
                           "overrides use omegaconf's dotlist form (optim.lr=0.1). SIGINT/SIGTERM save a checkpoint.")
    train.add_argument("pipeline", nargs="?", help="pipeline YAML (omit with --resume)")
    train.add_argument("overrides", nargs="*", help="key.path=value overrides")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    train.add_argument("--run-dir", metavar="DIR", help="write the run here instead of trainer.out_dir/<name>")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in the run folder (by default a fresh run refuses a folder "
                            "that holds one)")
    train.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="evaluate a run", description="kNN and linear-probe accuracy of a run's "
                        "representation on the held-out split; writes metrics.json and plots in RUN_DIR.")
    ev.add_argument("run_dir", metavar="RUN_DIR")
    ev.add_argument("overrides", nargs="*", help="eval.* / trainer.device / trainer.precision overrides "
                    "(e.g. trainer.device=cpu for a run trained on a GPU)")
    ev.set_defaults(func=_cmd_eval)

    add_embed_parser(sub)  # embed RUN_DIR DATA --out FILE

    add_plugin_parsers(sub)  # plugins list/show/check, new-plugin
    add_study_parser(sub)  # study STUDY.yaml

    config = sub.add_parser("config", help="show the resolved pipeline", description="Print a pipeline with "
                            "overrides applied and every default filled in.")
    config.add_argument("action", choices=["show"])
    config.add_argument("pipeline")
    config.add_argument("overrides", nargs="*")
    config.set_defaults(func=_cmd_config)

    bench = sub.add_parser("bench", help="run a registered benchmark", description="Run the benchmark NAME "
                           "(kind 'benchmark' in the registry) with its own arguments; no NAME lists them.")
    bench.add_argument("name", nargs="?", metavar="NAME")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark (see NAME --help)")
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SelfsupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130



if __name__ == "__main__":
    sys.exit(main())
