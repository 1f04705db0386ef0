# pytester runs whole pytest sessions with the plugin, as users do; it must be
# enabled from the rootdir conftest.
pytest_plugins = ["pytester"]

# The example gate needs a real model; it is run by examples/run-gate.sh, not by the test suite.
collect_ignore = ["examples", "bench"]
