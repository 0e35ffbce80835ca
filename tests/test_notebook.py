"""The notebooks run top to bottom: quickstart.ipynb (SMOKE mode: tiny synthetic
data) and your_data.ipynb (generated CSV files, no download)."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' brings nbformat")
nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' brings nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def run_notebook(nb, tmp_path, monkeypatch) -> tuple[list, str]:
    """Executes nb in tmp_path with the tests' gensar; returns (outputs of its code
    cells, their text). Fails if any cell raised."""
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel draws inline
    # the kernel imports the same gensar as the tests
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(NOTEBOOK.parents[1])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + o.get("text", "") for o in outputs)
    return outputs, text


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    params[0].source = "SMOKE = True"
    outputs, text = run_notebook(nb, tmp_path, monkeypatch)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, "the training-curve plot was not drawn"
    assert "NDCG@10" in text and "fitted in" in text


YOUR_DATA = NOTEBOOK.parent / "your_data.ipynb"


def test_your_data_notebook_executes(tmp_path, monkeypatch):
    """notebooks/your_data.ipynb: CSV -> from_pandas -> fit -> report -> evaluate ->
    recommend / search -> add_items -> save / load, on generated data (no download)."""
    nb = nbformat.read(YOUR_DATA, as_version=4)
    outputs, text = run_notebook(nb, tmp_path, monkeypatch)
    assert [o for o in outputs if "image/png" in o.get("data", {})], "the code-usage plot was not drawn"
    assert "NDCG@10" in text and "fitted in" in text
    assert "82 items now" in text and "identifiers still unique: True" in text
    assert "sku-900" in text and "quantiser.npz" in text and "83 items in the loaded model" in text
