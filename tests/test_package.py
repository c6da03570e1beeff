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


def test_no_import_circles_inside_vae():
    """Walk the package's own imports (module level and inside functions) and look for a cycle.
    An `if __name__ == "__main__":` block runs only when its file is the program (`python -m
    vae.train` hands over to vae.cli there), never on import, so it cannot close a circle."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "vae"
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        tree = ast.parse(path.read_text())
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    deps.add(node.module.split(".")[0])
                else:
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vae."):
                deps.add(node.module.split(".")[1])
        graph[path.stem] = deps & {p.stem for p in root.glob("*.py")}

    def cycle_from(start, node, seen):
        for dep in graph.get(node, ()):
            if dep == start:
                return [node, dep]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(start, dep, seen)
                if found:
                    return [node, *found]
        return None

    cycles = {m: cycle_from(m, m, set()) for m in graph}
    assert not {m: c for m, c in cycles.items() if c}, "import cycles in vae/"
