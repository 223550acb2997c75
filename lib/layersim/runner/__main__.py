"""``python -m layersim.runner --profile {smoke,default,paper} [--only NAME ...] [--jobs N]``"""
import sys

from .cli import main

sys.exit(main())
