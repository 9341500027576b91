"""Integration tests: start the real `luagent` binary and talk to it over HTTP.

Run from the repository root:
    python3 -m unittest discover -s tests/integration -t . -v
    python3 tests/integration/run.py

Environment: LUAGENT_BIN (default build/luagent), LUAGENT_TEST_SLOW (timing factor, 3 under sanitizers).
"""
