"""`python -m qcompress` (what torchrun starts): the command line."""

from qcompress.cli import app

if __name__ == "__main__":
    app(prog_name="qcompress")
