import sys

from remote_agent.cli import main

sys.exit(main())
