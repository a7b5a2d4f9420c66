"""`python -m prorl_engine.ablations --out DIR [options]`: run the ablations and write their report."""

from prorl_engine.ablations.cli import main

raise SystemExit(main())
