"""The README's two commands are the contract for a fresh machine; CI must run the second."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_gives_exactly_two_commands_app_then_tests():
    app, tests = _commands()
    assert "streamlit run app.py" in app and "requirements.txt" in app
    assert "pytest" in tests and "requirements-dev.txt" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci.splitlines()


def test_requirements_pin_the_torch_build_on_disk():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs


def test_space_front_matter_parses():
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n")
    front = text.split("---\n", 2)[1]
    fields = dict(line.split(":", 1) for line in front.strip().splitlines())
    assert fields["sdk"].strip() == "docker" and fields["app_port"].strip() == "8501"
