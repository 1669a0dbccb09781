pytest_plugins = ["tests.fixtures_pg"]
