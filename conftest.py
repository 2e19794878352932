pytest_plugins = ["tests.fixtures_servers", "tests.fixtures_stack"]
