"""Lab scripts behind docs/ (results table, discriminator probe, log figures); not part of the
installed package (pyproject packages only asd_core and trainer). Run them from the
repository root: `python -m research.results`, `python -m research.disc_probe`,
`python -m research.log_figures`.
"""
