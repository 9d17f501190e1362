import sys

try:
    from profiler.cli import main
except KeyboardInterrupt:  # Ctrl-C while the CLI itself loads: the quiet stop it gives later, not a traceback
    sys.exit(130)

sys.exit(main())
