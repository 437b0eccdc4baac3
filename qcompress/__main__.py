from qcompress.cli import app

app(prog_name="qcompress")
