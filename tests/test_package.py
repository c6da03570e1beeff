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


def import_graph(root) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (module level and inside functions). An
    `if __name__ == "__main__":` block runs only when its file is the program (`python -m
    vae.train` hands over to vae.cli there), never on import, so it cannot close a circle."""
    import ast

    names = {p.stem for p in root.glob("*.py")}
    graph = {}
    for path in root.glob("*.py"):
        deps = set()
        tree = ast.parse(path.read_text())
        tree.body = [n for n in tree.body if not (isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps.update([node.module.split(".")[0]] if node.module else (a.name for a in node.names))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(root.name + "."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names if a.name.startswith(root.name + "."))
        graph[path.stem] = deps & names
    return graph


def cycles(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Each module that can reach itself, with one path that does."""
    def path_back(start, node, seen):
        for dep in sorted(graph.get(node, ())):
            if dep == start:
                return [node, dep]
            if dep not in seen:
                seen.add(dep)
                found = path_back(start, dep, seen)
                if found:
                    return [node, *found]
        return None

    return {m: c for m in graph if (c := path_back(m, m, set()))}


def test_no_import_circles_inside_vae():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "vae"
    assert len(import_graph(root)) > 20  # every module was read
    assert not cycles(import_graph(root)), "import cycles in vae/"


def test_the_cycle_walk_finds_a_circle_through_any_kind_of_import(tmp_path):
    """The walk above can fail: a package whose a -> b -> c -> a circle closes through a
    function-level `from . import`, a plain `import pkg.c` and a `from pkg.a import`."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("import pkg.c\n")
    (pkg / "c.py").write_text("from pkg.a import f\n")
    (pkg / "d.py").write_text("from .a import f\nif __name__ == '__main__':\n    from . import d\n")
    found = cycles(import_graph(pkg))
    assert set(found) == {"a", "b", "c"} and found["a"] == ["a", "b", "c", "a"]


def scratch_venv_without(tmp_path, hidden: tuple[str, ...]):
    """A new virtual environment whose site-packages links every package of this one except
    `hidden` (their modules and their .dist-info): for its Python they are not installed."""
    import site
    import venv
    from pathlib import Path

    env = tmp_path / "scratch"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env)
    [ours] = [Path(p) for p in site.getsitepackages()]
    [theirs] = list((env / "lib").glob("python3*/site-packages"))
    for entry in ours.iterdir():
        name = entry.name.lower().replace("-", "_")
        if not any(name == h or name.startswith(h + "_") or name.startswith(h + ".") for h in hidden):
            (theirs / entry.name).symlink_to(entry)
    return env / "bin" / "python"


def test_vae_maps_imports_with_streamlit_uninstalled_in_a_scratch_venv(tmp_path):
    """Issue 15's "Done when": the map domain code (vae.maps) needs no Streamlit at all."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    python = scratch_venv_without(tmp_path, ("streamlit",))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(tmp_path)}

    def run(code):
        return subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)

    gone = run("import streamlit")  # the test can fail: in this environment Streamlit is not there
    assert gone.returncode == 1 and "No module named 'streamlit'" in gone.stderr, gone.stderr
    assert run("import numpy, torch, scipy").returncode == 0  # ...and everything else is
    maps = run("import vae.maps; print(vae.maps.build_latent_map.__module__)")
    assert maps.returncode == 0 and maps.stdout.split() == ["vae.maps"], maps.stderr[-2000:]
    # ...and so do the map pictures' renderer and the build step that bakes the maps and the β
    # dial's members into the image
    render = run("import ui.map_render as r; print(r.render_map_image.__module__)")
    assert render.returncode == 0 and render.stdout.split() == ["ui.map_render"], render.stderr[-2000:]
    (tmp_path / "empty").mkdir()
    env |= {"LATENT_EXPLORER_CHECKPOINTS": str(tmp_path / "empty"), "LATENT_EXPLORER_STATE": str(tmp_path / "state")}
    prebuild = subprocess.run([str(python), "-m", "ui.prebuild", "--methods", "tsne"], capture_output=True,
                              text=True, cwd=tmp_path, env=env)
    assert prebuild.returncode == 0 and not prebuild.stderr, prebuild.stderr[-2000:]


def test_the_console_scripts_in_pyproject_run_as_their_wrappers_would():
    """pyproject.toml's [project.scripts] (e.g. latent-explorer-train) name functions that exist
    and run as the installed wrapper calls them: sys.exit(function()) with the script's argv."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["latent-explorer-train"] == "vae.cli:train_main"
    for name, target in scripts.items():
        module, function = target.split(":")
        wrapper = (f"import sys; from {module} import {function}; sys.argv = [{name!r}, '--help']; "
                   f"sys.exit({function}())")
        proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0 and proc.stdout.startswith("usage:"), (name, proc.stderr[-2000:])
    kept = subprocess.run([sys.executable, "-m", "vae.train", "--help"], capture_output=True, text=True, cwd=root)
    assert kept.returncode == 0 and "--preset" in kept.stdout  # python -m vae.train kept
