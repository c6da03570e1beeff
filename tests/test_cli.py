import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from vae import load_checkpoint
from vae.cli import train_main


def test_cli_trains_a_pair_and_prints_a_summary(npz_file, tmp_path, capsys):
    code = train_main(["--preset", "mnist-2d", "--data", str(npz_file), "--epochs", "1", "--batch-size", "16",
                       "--out", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert code == 0 and "done after" in out and "-ELBO" in out
    assert load_checkpoint(tmp_path / "m-vae.safetensors").config.preset == "mnist-2d"
    assert load_checkpoint(tmp_path / "m-ae.safetensors").config.variational is False


def test_cli_trains_with_bfloat16_matmuls_and_records_it(npz_file, tmp_path, capsys):
    code = train_main(["--preset", "mnist-2d", "--data", str(npz_file), "--epochs", "1", "--batch-size", "16",
                       "--models", "vae", "--precision", "bfloat16", "--out", str(tmp_path / "m")])
    assert code == 0 and "-ELBO" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "m-vae.safetensors").train["precision"] == "bfloat16"


@pytest.mark.parametrize("flags,backend", [(["--autograd"], "autograd"), (["--backend", "autograd"], "autograd"),
                                           ([], "fused")])
def test_cli_backend_flags_choose_the_step_and_the_checkpoint_records_it(npz_file, tmp_path, capsys, flags, backend):
    code = train_main(["--preset", "mnist-2d", "--data", str(npz_file), "--epochs", "1", "--batch-size", "16",
                       "--models", "ae", *flags, "--out", str(tmp_path / "m")])
    assert code == 0 and "done after" in capsys.readouterr().out
    ck = load_checkpoint(tmp_path / "m-ae.safetensors")
    assert ck.train["backend"] == (backend if flags else "auto") and ck.extra["backend"] == backend


def test_cli_says_which_backend_a_model_cannot_take(npz_file, tmp_path, capsys):
    code = train_main(["--preset", "tutorial-mnist-mlp", "--data", str(npz_file), "--epochs", "1", "--models", "ae",
                       "--backend", "fused", "--out", str(tmp_path / "m")])
    assert code != 0 and "backend 'fused' implements MLP models" in capsys.readouterr().err


def test_cli_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--preset", "mnist-2d", "--precision", "float16"])
    assert exit_info.value.code == 2 and "invalid choice: 'float16'" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--latent-dim", "0"], "latent_dim"),
    (["--lr", "-0.1"], "lr"),
    (["--epochs", "0"], "epochs"),
    (["--data", "no/such/place"], "neither a known name"),
])
def test_cli_errors_name_the_parameter(args, message, npz_file, capsys, tmp_path):
    base = ["--preset", "mnist-2d", "--data", str(npz_file), "--out", str(tmp_path / "m")]
    assert train_main(base + args) == 2
    assert message in capsys.readouterr().err


def test_unknown_preset_via_the_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "vae.train", "--preset", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr


def test_the_same_command_twice_gives_the_same_weights_bit_for_bit(npz_file, tmp_path, capsys):
    from safetensors.torch import load_file

    weights = []
    for run, global_seed in enumerate((1, 2)):  # whatever the process's generator held before
        torch.manual_seed(global_seed)
        out = tmp_path / f"run{run}"
        assert train_main(["--preset", "mnist-2d", "--data", str(npz_file), "--epochs", "1", "--batch-size", "16",
                           "--seed", "3", "--out", str(out)]) == 0
        weights.append({k: load_file(f"{out}-{k}.safetensors") for k in ("ae", "vae")})
    for kind in ("ae", "vae"):
        first, second = weights[0][kind], weights[1][kind]
        assert first.keys() == second.keys()
        assert all(torch.equal(first[name], second[name]) for name in first), kind


def test_help_says_each_default_once():
    from vae.cli import build_parser

    text = build_parser().format_help()
    entries = re.split(r"\n  (?=-)", text.split("options:", 1)[1])  # one entry per option
    assert len(entries) > 10
    for entry in entries:
        assert "(default: None)" not in entry and entry.count("default") <= 1, entry


@pytest.mark.parametrize("shape,preset", [((28, 28), "mnist-2d"), ((8, 8, 3), "cifar-conv"), ((6, 6, 3), "mnist-2d")])
def test_without_preset_the_data_chooses_one_and_the_cli_says_which(tmp_path, capsys, shape, preset):
    x = np.random.default_rng(0).integers(0, 256, (20, *shape), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20) % 2, x_test=x[:8], y_test=np.arange(8) % 2)
    code = train_main(["--data", str(tmp_path / "d.npz"), "--epochs", "1", "--batch-size", "8",
                       "--out", str(tmp_path / "m")])
    captured = capsys.readouterr()
    assert code == 0 and f"--preset {preset}" in captured.err and f"of {preset} on d" in captured.out
    assert load_checkpoint(tmp_path / "m-vae.safetensors").config.preset == preset


def test_without_preset_or_data_the_cli_asks_for_one(capsys):
    assert train_main([]) == 2
    assert "--preset" in capsys.readouterr().err
