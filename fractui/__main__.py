import sys

from fractui.cli import main

sys.exit(main())
