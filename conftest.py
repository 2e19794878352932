import os

# Deletions wait out the services' data-key cache (services/common/purge.py); a short cache keeps them quick.
os.environ.setdefault("STUDIO_DATA_KEY_TTL_S", "1")

pytest_plugins = ["tests.fixtures_servers", "tests.fixtures_stack"]
