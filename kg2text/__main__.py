import sys

from kg2text.cli import main

sys.exit(main())
