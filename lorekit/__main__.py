import sys

from lorekit.cli import main

sys.exit(main())
