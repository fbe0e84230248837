"""Tests of the local helpers that touch files: `python3 -B -m unittest discover -s scripts/lib`."""

import os
import sys
import tempfile
import unittest
from unittest import mock

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgwarden_local import remove_tree  # noqa: E402


class RemoveTreeTest(unittest.TestCase):
    def test_a_file_that_vanishes_during_the_purge_is_not_an_error(self):
        # What `down --purge` met: a postmaster still exiting removed postmaster.pid between
        # the directory listing and the unlink.
        root = tempfile.mkdtemp(prefix="pgwarden-purge-")
        data = os.path.join(root, "pg-1", "pgdata")
        os.makedirs(data)
        for name in ("postmaster.pid", "PG_VERSION"):
            with open(os.path.join(data, name), "w") as f:
                f.write("1\n")
        real_unlink = os.unlink

        def racing_unlink(path, *args, **kwargs):
            if os.path.basename(str(path)) == "postmaster.pid":
                real_unlink(path, *args, **kwargs)  # the postmaster got there first
            return real_unlink(path, *args, **kwargs)

        with mock.patch("os.unlink", racing_unlink):
            remove_tree(root)
        self.assertFalse(os.path.exists(root))

    def test_a_missing_directory_is_already_removed(self):
        remove_tree(os.path.join(tempfile.gettempdir(), "pgwarden-purge-never-existed"))


if __name__ == "__main__":
    unittest.main()
