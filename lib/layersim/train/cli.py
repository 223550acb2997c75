"""``python -m layersim.train --config NAME_OR_FILE --out DIR [--overwrite] [--KEY VALUE ...]``."""
from __future__ import annotations

import argparse
import os
import sys

from .checkpoint import CheckpointError
from .config import KEYS, ConfigError, recipes, resolve, unknown_key_error

USAGE = "python -m layersim.train --config NAME_OR_FILE --out DIR [--overwrite] [--KEY VALUE ...]"


def parse_overrides(tokens: list) -> dict:
    """['--epochs', '2', '--lr=1e-3'] -> {'epochs': '2', 'lr': '1e-3'} (dashes in keys read as underscores).
    Raises ConfigError for an unknown key or a key without a value."""
    out, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"expected --KEY VALUE, got {token!r}; usage: {USAGE}")
        key, eq, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if key not in KEYS:
            raise unknown_key_error(key)
        if not eq:
            if i + 1 >= len(tokens):
                raise ConfigError(f"--{key} needs a value")
            value = tokens[i + 1]
            i += 1
        out[key] = value
        i += 1
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m layersim.train", usage=USAGE, allow_abbrev=False,
        description="Train a model with the standard, aligned or multi-exit objective (layersim).",
        epilog=f"recipes: {', '.join(recipes())}. Config keys (--KEY VALUE): {', '.join(KEYS)}.")
    parser.add_argument("--config", required=True, help="a recipe name or a YAML file")
    parser.add_argument("--out", required=True, help="the run folder (resumed when it holds the same run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard what --out holds of another training run instead of refusing")
    args, rest = parser.parse_known_args(argv)
    try:
        if not args.out.strip():  # an unset shell variable: never train into the current folder
            raise ConfigError("--out must name a folder for the run, got '' (an empty path would train into the "
                              "current folder)")
        cfg = resolve(args.config, parse_overrides(rest))
    except ConfigError as e:
        parser.print_usage(sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .loop import train
    from .runs import RunConflictError

    try:
        result = train(cfg, args.out, overwrite=args.overwrite)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RunConflictError, CheckpointError, ValueError, OSError) as e:  # OSError: a full disk, a missing file
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # as the runner: one line, status 130; the same command resumes exactly
        print(f"interrupted; run the same command again to resume from the last checkpoint in {args.out}",
              file=sys.stderr)
        return 130
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result.layer_acc is not None:
        print("test accuracy by layer (shared head): " + " ".join(f"{a:.4f}" for a in result.layer_acc))
    if result.exit_acc is not None:
        print("test accuracy by layer (exit heads):  " + " ".join(f"{a:.4f}" for a in result.exit_acc))
    print(f"run folder: {result.dir}")
    return 0
