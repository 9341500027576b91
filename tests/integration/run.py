#!/usr/bin/env python3
"""Run the integration suite (same discovery as `python3 -m unittest discover -s tests/integration -t .`)
and end with one line: `N passed, N failed` (plus `, N skipped` when any). Exit status 1 on any failure.

Extra arguments are test name patterns (unittest -k), e.g. `run.py -k HotSwap`.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class CountingResult(unittest.TextTestResult):
    """Counts tests, not subtests: a test passes when it and all its subtests pass."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.passed_ids = set()
        self.failed_ids = set()
        self.class_errors = 0  # setUpClass / tearDownClass / module fixtures

    def _mark_failed(self, test):
        if isinstance(test, unittest.case._SubTest):
            test = test.test_case
        if isinstance(test, unittest.TestCase):
            self.failed_ids.add(test.id())
        else:  # _ErrorHolder for a class or module fixture
            self.class_errors += 1

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed_ids.add(test.id())

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark_failed(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._mark_failed(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark_failed(subtest)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed_ids.add(test.id())


def main(argv):
    os.chdir(REPO)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    loader = unittest.TestLoader()
    if "-k" in argv:
        i = argv.index("-k")
        loader.testNamePatterns = ["*%s*" % p if "*" not in p else p for p in argv[i + 1:i + 2]]
    suite = loader.discover(start_dir=HERE, pattern="test*.py", top_level_dir=REPO)
    total = suite.countTestCases()
    runner = unittest.TextTestRunner(verbosity=2, resultclass=CountingResult, stream=sys.stderr)
    t0 = time.monotonic()
    result = runner.run(suite)
    wall = time.monotonic() - t0
    skipped = len(result.skipped)
    passed = len(result.passed_ids - result.failed_ids)
    # Tests that never ran because their class's setUpClass failed count as failed, and so does a
    # failing tearDownClass (the server crashed or did not exit cleanly).
    failed = total - passed - skipped
    teardown_failures = sum(1 for t, _ in result.errors
                            if not isinstance(t, unittest.TestCase) and "tearDown" in str(t))
    failed += teardown_failures
    if failed == 0 and (result.failures or result.errors):
        failed = len(result.failures) + len(result.errors)
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    sys.stderr.flush()
    print(f"(integration suite wall time {wall:.1f} s)")
    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
