"""`python -m pipelines.cli`: the same as the `sluice` console script."""

from pipelines.cli import main

main()
