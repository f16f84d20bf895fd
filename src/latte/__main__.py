import sys

from latte.cli.main import main

sys.exit(main())
