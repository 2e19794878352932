import subprocess
import sys

from services.cli.stack import REPO_ROOT


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`studio styles list | head -1`: the pipe closes before the listing is written."""
    listing = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "styles", "list", "--endpoint", "127.0.0.1:1"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    listing.stdout.close()  # long before the interpreter has started and written anything
    _, errors = listing.communicate(timeout=120)
    assert listing.returncode == 141 and b"Traceback" not in errors, errors.decode()
