"""`python -m prorl_engine.demo --out DIR [options]`: build the demo's base model (see demo.build)."""

from prorl_engine.demo.build import main

raise SystemExit(main())
