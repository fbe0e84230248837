"""Tests of what `local-cluster up` renders for the archive and a restore, without starting anything:
`python3 -B -m unittest discover -s scripts/lib`."""

import argparse
import datetime
import json
import os
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgwarden_backup import (  # noqa: E402
    archive_lines, recovery_spec, recovery_target, s3_settings, store_spec, store_url,
    target_time,
)
from pgwarden_cluster import Cluster, config_doc, new_state  # noqa: E402
from pgwarden_local import Failure  # noqa: E402


def flags(**kw):
    base = {"s3_endpoint": None, "s3_region": None, "s3_access_key_file": None, "s3_secret_key_file": None,
            "s3_ca_file": None, "target_time": None, "target_lsn": None, "target_xid": None,
            "target_name": None, "target_immediate": False}
    return argparse.Namespace(**dict(base, **kw))


def source_archive(test, clusters):
    """A local archive directory laid out like the manager's (<dir>/<cluster>/cluster.json and
    base/<id>/backup.json), deleted after `test`."""
    tmp = tempfile.TemporaryDirectory()
    test.addCleanup(tmp.cleanup)
    for name, backups in clusters.items():
        os.makedirs(os.path.join(tmp.name, name))
        open(os.path.join(tmp.name, name, "cluster.json"), "w").close()
        for b in backups:
            os.makedirs(os.path.join(tmp.name, name, "base", b))
            open(os.path.join(tmp.name, name, "base", b, "backup.json"), "w").close()
    return "file://" + tmp.name


class StoreTest(unittest.TestCase):
    def test_urls(self):
        self.assertEqual(store_url("/a/b/../c/", "--archive"), "file:///a/c")
        self.assertEqual(store_url("file:///a/c/", "--archive"), "file:///a/c")
        self.assertEqual(store_url("s3://bkt/pre/", "--archive"), "s3://bkt/pre")
        for bad in ("ftp://x", "file://rel", "s3:///pre"):
            with self.assertRaises(Failure):
                store_url(bad, "--archive")

    def test_s3_keys_from_environment_become_secrets(self):
        s3, given = s3_settings(flags(), env={"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
                                              "AWS_ENDPOINT_URL": "http://127.0.0.1:9000"})
        self.assertEqual(given, {"s3_access_key_id": "AK", "s3_secret_access_key": "SK"})
        self.assertEqual(s3["endpoint"], "http://127.0.0.1:9000")
        self.assertEqual(store_spec("file:///x", s3), {"destination": "file:///x"})  # s3 only for s3://


class RecoveryTest(unittest.TestCase):
    def test_target_time_is_utc_with_a_numeric_offset(self):
        self.assertEqual(target_time("2026-11-30 13:00:00.5+01"), "2026-11-30T12:00:00.500000+00:00")
        with self.assertRaises(Failure):
            target_time("2026-11-30 12:00")  # no zone

    def test_one_target(self):
        self.assertIsNone(recovery_target(flags()))
        self.assertEqual(recovery_target(flags(target_lsn="0/3000060")), {"lsn": "0/3000060"})
        self.assertEqual(recovery_target(flags(target_immediate=True)), {"immediate": True})
        with self.assertRaises(Failure):
            recovery_target(flags(target_lsn="0/1", target_name="x"))

    def test_local_source_is_checked(self):
        src = source_archive(self, {"local": ["B1"]})
        spec = recovery_spec(src, {}, None, None, None, "local", "lc")
        self.assertEqual(spec["sourceCluster"], "local")
        for source, backup in (("other", None), (None, "B2")):
            with self.assertRaises(Failure):
                recovery_spec(src, {}, source, backup, None, "local", "lc")
        with self.assertRaises(Failure):  # archived WAL, no base backup
            recovery_spec(source_archive(self, {"local": []}), {}, None, None, None, "local", "lc")
        with self.assertRaises(Failure):  # two clusters: which one?
            recovery_spec(source_archive(self, {"a": ["B"], "b": ["B"]}), {}, None, None, None, "local", "lc")


class RenderTest(unittest.TestCase):
    def test_every_instance_archives_and_may_restore(self):
        c = Cluster("/tmp/lc-test")
        rec = {"store": {"destination": "s3://bkt/pre", "s3": {"endpoint": "http://127.0.0.1:9000",
                                                               "accessKeyIdFile": {"secret": "s3_access_key_id"}}},
               "sourceCluster": "local", "target": {"time": "2026-11-30T12:00:00+00:00"}}
        c.state = new_state(3, [1, 2, 3], [4, 5, 6], {"lease_duration": 15, "renew_deadline": 10,
                                                     "retry_period": 2, "fence_budget": 2},
                            None, name="restored", archive={"destination": "file:///tmp/lc-test/archive"},
                            recovery=rec)
        for inst in c.instances:
            doc = config_doc(c, inst, "/usr/bin")
            self.assertEqual(doc["cluster"], "restored")
            self.assertEqual(doc["backup"], {"store": {"destination": "file:///tmp/lc-test/archive"}})
            self.assertEqual(doc["bootstrap"]["recovery"], {
                "store": {"destination": "s3://bkt/pre",
                          "s3": {"endpoint": "http://127.0.0.1:9000",
                                 "accessKeyIdFile": "/tmp/lc-test/secrets/s3-access-key-id"}},
                "sourceCluster": "local",
                "target": {"time": "2026-11-30T12:00:00+00:00"}})

    def test_no_archive_renders_nothing(self):
        c = Cluster("/tmp/lc-test")
        c.state = new_state(1, [1], [2], {"lease_duration": 15, "renew_deadline": 10, "retry_period": 2,
                                          "fence_budget": 2}, None)
        doc = config_doc(c, c.instances[0], "/usr/bin")
        self.assertNotIn("backup", doc)
        self.assertNotIn("recovery", doc["bootstrap"])


class StatusTest(unittest.TestCase):
    def test_archive_and_backup_lines(self):
        now = datetime.datetime(2026, 11, 30, 12, 0, 10, tzinfo=datetime.timezone.utc)
        entries = json.loads("""[
          {"name": "pg-1", "role": "primary",
           "archive": {"destination": "file:///a", "last_archived_wal": "000000010000000000000005",
                       "last_archived_at": "2026-11-30T12:00:00Z", "archived_total": 5, "failures_total": 0,
                       "backlog": 0},
           "backup": {"last_backup": {"id": "B1", "instance": "pg-1", "stopped_at": "2026-11-30T11:00:10Z",
                                      "age_seconds": 3600}}},
          {"name": "pg-2", "role": "replica",
           "archive": {"destination": "file:///a", "archived_total": 0, "failures_total": 2,
                       "last_failed_wal": "000000010000000000000004", "last_failure": "disk full",
                       "last_failed_at": "2026-11-30T11:59:10Z", "backlog": null},
           "backup": {"last_backup": null, "last_failure": "no space", "last_failed_at": "2026-11-30T11:59:40Z"}},
          {"name": "pg-3", "role": "down"}]""")
        lines = archive_lines(entries, now)
        self.assertEqual(lines[0], "archive: file:///a")
        self.assertEqual(lines[1], "  pg-1: last 000000010000000000000005 10 s ago, 5 archived by this manager, "
                                   "no backlog")
        self.assertIn("2 failures, last 000000010000000000000004 60 s ago: disk full", lines[2])
        self.assertEqual(lines[3], "last backup: B1 by pg-1, 60 min ago")
        self.assertEqual(lines[4], "  pg-2: last backup failed 30 s ago: no space")
        self.assertEqual(archive_lines([{"name": "pg-1", "role": "primary", "archive": None}]), [])


if __name__ == "__main__":
    unittest.main()
