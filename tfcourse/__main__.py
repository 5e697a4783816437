from tfcourse.cli import main
import sys

sys.exit(main())
