"""Execute every notebook in this folder in place, so that they are committed with their
outputs and read without running (`make notebooks`). The test suite executes them again."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for path in sorted(HERE.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}
        ).execute()
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(notebook, tmp)
        tmp.replace(path)  # atomic: a failed run leaves the committed notebook as it was
        print(f"executed {path.name}")
