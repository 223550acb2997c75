"""``python -m layersim.data {install,status}``: see `layersim.data.install`."""
import sys

from .install import main

sys.exit(main())
