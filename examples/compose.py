"""The MoCo digits pipeline composed in Python instead of YAML.

    python examples/compose.py [--epochs N] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import selfsup
from selfsup.config import TrainerConfig
from selfsup.engine import Settings, Trainer


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--run-dir", default="runs/compose")
    args = parser.parse_args(argv)

    registry = selfsup.default_registry()
    data = registry.create("dataset", "digits")
    encoder = registry.create("encoder", "small_conv", in_channels=data.in_channels, image_size=data.image_size)
    moco = registry.create(
        "objective", "moco",
        encoder=encoder,
        critic=registry.create("critic", "dot", temperature=0.2),
        sampler=registry.create("sampler", "momentum_queue", size=1024),
        embedding_dim=64,
        symmetric=True,
    )
    settings = Settings(trainer=TrainerConfig(epochs=args.epochs, progress=False))
    settings.data.batch_size = 128
    trainer = Trainer(moco, data, registry.create("transform", "two_view"), settings, Path(args.run_dir))
    result = trainer.fit()
    return {"before": result.before, "after": result.after}


if __name__ == "__main__":
    main()
