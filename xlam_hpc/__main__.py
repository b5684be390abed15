"""`python -m xlam_hpc` is the `xlam-hpc` console script."""

from xlam_hpc.cli import main

raise SystemExit(main())
