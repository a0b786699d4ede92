#!/usr/bin/env python3
"""scripts/lib/bench_summary.py: what `scripts/bench` says about the build and the previous run."""

import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "lib"))
import bench_summary  # noqa: E402


class RegressionsTest(unittest.TestCase):
    def test_a_row_more_than_15_percent_worse_either_way_is_named(self):
        before = {"match_p99_us": 10.0, "ingest_blocks_per_second": 1.0e6, "memory_bytes_per_entry": 30.0}
        now = {"match_p99_us": 11.6, "ingest_blocks_per_second": 0.8e6, "memory_bytes_per_entry": 30.0}
        self.assertEqual([r[0] for r in bench_summary.regressions(now, before)],
                         ["ingest_blocks_per_second", "match_p99_us"])

    def test_better_rows_small_changes_and_missing_rows_are_not(self):
        before = {"match_p99_us": 10.0, "ingest_blocks_per_second": 1.0e6, "gone": 5.0, "flag": True}
        now = {"match_p99_us": 5.0, "ingest_blocks_per_second": 0.9e6, "new": 1.0, "flag": False}
        self.assertEqual(bench_summary.regressions(now, before), [])


class PreviousResultsTest(unittest.TestCase):
    def test_the_newest_older_results_file_is_the_previous_run(self):
        with tempfile.TemporaryDirectory() as d:
            for stamp, value in (("20261201T000000Z", 1), ("20261202T000000Z", 2), ("20261204T000000Z", 4)):
                with open(os.path.join(d, stamp + ".json"), "w") as f:
                    json.dump({"summary": {"x": value}}, f)
            with open(os.path.join(d, "20261203T000000Z.json"), "w") as f:
                f.write("not json")
            name, doc = bench_summary.previous_results(os.path.join(d, "20261204T000000Z.json"))
            self.assertEqual(name, "20261202T000000Z.json")
            self.assertEqual(doc["summary"]["x"], 2)
            self.assertEqual(bench_summary.previous_results(os.path.join(d, "20261201T000000Z.json")), (None, None))


class CompileFlagsTest(unittest.TestCase):
    def test_flags_of_the_build_type_come_from_the_cache(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "CMakeCache.txt"), "w") as f:
                f.write("CMAKE_CXX_FLAGS:STRING=-Wall\nCMAKE_CXX_FLAGS_RELEASE:STRING=-O3 -DNDEBUG\n"
                        "CMAKE_CXX_FLAGS_RELWITHDEBINFO:STRING=-O2 -g -DNDEBUG\n")
            self.assertEqual(bench_summary.compile_flags(d, "Release"), "-Wall -O3 -DNDEBUG")
            self.assertEqual(bench_summary.compile_flags(d, "RelWithDebInfo"), "-Wall -O2 -g -DNDEBUG")
            self.assertEqual(bench_summary.compile_flags(os.path.join(d, "none"), "Release"), "")


if __name__ == "__main__":
    unittest.main()
