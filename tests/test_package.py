import subprocess
import sys


def test_vae_never_imports_streamlit():
    code = ("import sys, vae, vae.train, vae.cli, vae.metrics, vae.checkpoint;"
            "import importlib, pkgutil;"
            "[importlib.import_module('vae.' + m.name) for m in pkgutil.iter_modules(vae.__path__)"
            " if m.name not in ('__main__',)];"
            "print('streamlit' in sys.modules, 'umap' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # umap (numba) is imported only when a UMAP map is asked for
