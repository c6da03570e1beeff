"""The library's errors: each names the parameter or file at fault, so the CLI and the app
can show the message as it is."""
import sys


class LatentExplorerError(Exception):
    """Base class of every error this library raises on purpose."""


class ConfigError(LatentExplorerError, ValueError):
    """A hyper-parameter, preset or option is out of range or unknown."""


class DatasetError(LatentExplorerError):
    """A data set cannot be loaded (missing, malformed, or not downloadable)."""


class CheckpointError(LatentExplorerError):
    """A checkpoint file is missing, truncated, corrupt or not one of ours."""


def run_cli(parser, run, argv=None) -> int:
    """Parse argv, call run(args), and turn the library's errors into one line and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LatentExplorerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
