"""`python -m ptcap.cli`: the ptcap command."""
import sys

from ptcap.cli.main import main

sys.exit(main())
