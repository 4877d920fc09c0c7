"""`python -m autointerp ...`, and so `torchrun --nproc_per_node N -m autointerp harvest|train ...`."""

from autointerp.cli import main

main()
