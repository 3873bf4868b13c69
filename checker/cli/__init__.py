"""The `virtgpu-conform` command line: argument parsing and printing over the library."""
