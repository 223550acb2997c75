"""``python -m layersim.report MODEL [--data SOURCE] [--n N] [--out DIR] [--device D]``"""
import sys

from .cli import main

sys.exit(main())
