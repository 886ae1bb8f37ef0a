"""`python -m perceptsr` (and `torchrun -m perceptsr`) run the CLI."""

from perceptsr.cli.main import main

raise SystemExit(main())
