"""`python -m virtgpu_conform`: the command line."""

from virtgpu_conform.checker.cli.main import main

main(prog_name="virtgpu-conform")
