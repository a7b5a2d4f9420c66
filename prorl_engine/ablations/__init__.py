"""Ablations of the ProRL recipe on the demo model, and the report that says what they show.

- `variants`: the full recipe and one variant per part of it, each switching that part off;
- `runs`: training every variant to the same generation budget, and reading the runs back;
- `verdicts`: a verdict on each of PRORL_SPEC.md section 13's claims, from the measured numbers;
- `report`: README.md, PNG plots and an interactive report.html, written where the caller says;
- `cli`: the command (`prorl ablate`, `python -m prorl_engine.ablations`).
"""
