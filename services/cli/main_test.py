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


def test_the_cli_starts_in_every_image() -> None:
    """`kubectl exec deploy/privacy -- python -m services.cli.main ...`: the privacy image has neither Pillow nor
    torch, so the CLI must not import them before a command needs them."""
    absent = ("PIL", "torch", "diffusers", "transformers", "dlib")
    blocked = f"import sys\nfor name in {absent}: sys.modules[name] = None\n"
    started = subprocess.run(
        [sys.executable, "-c", blocked + "sys.argv = ['studio', '--help']\nimport services.cli.main as m\nm.main()"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0 and "usage" in started.stdout, started.stderr


def test_every_image_carries_the_packages_the_cli_imports() -> None:
    """The CLI imports studio_client (orders, uploads): each Python image copies it with services/."""
    for dockerfile in ("cpu.Dockerfile", "trainer.Dockerfile"):
        text = (REPO_ROOT / "deploy" / "docker" / dockerfile).read_text()
        assert "COPY services services" in text and "COPY studio_client studio_client" in text, dockerfile
