"""The old name of the batch runner's command: ``python -m layersim.regenerate`` is
``python -m layersim.runner`` (see `layersim.runner`)."""
import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
