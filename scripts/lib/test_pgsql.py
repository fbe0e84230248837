"""Tests of `pgsql` (SQL through psql) against a throw-away Postgres with SCRAM passwords on
loopback: rows and NULLs, a refused statement, a session's warnings, a statement that outlives
its timeout, a connection that breaks. Skipped without the Postgres binaries:
`python3 -B -m unittest discover -s scripts/lib`."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgsql import ConnectionLost, PgError, Session, parse_rows, query  # noqa: E402
from pgwarden_local import ensure_postgres_user, find_pg_bindir, free_port  # noqa: E402

PASSWORD = "pw with 'quotes' and spaces"


class ParseTest(unittest.TestCase):
    def test_rows_fields_and_nulls(self):
        self.assertEqual(parse_rows(""), [])
        self.assertEqual(parse_rows("a\x1fb\x1e\x1d\x1fline\nbreak\n"), [["a", "b"], [None, "line\nbreak"]])


@unittest.skipUnless(find_pg_bindir(), "needs the Postgres server binaries")
class PsqlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        bindir = find_pg_bindir()
        user = ensure_postgres_user()
        as_user = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
        cls.tmp = tempfile.mkdtemp(prefix="pgwarden-psql-test-")
        os.chmod(cls.tmp, 0o755)
        data = os.path.join(cls.tmp, "data")
        pwfile = os.path.join(cls.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        if user:
            os.chown(cls.tmp, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        subprocess.run([os.path.join(bindir, "initdb"), "-D", data, "-U", "postgres", "--pwfile", pwfile,
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
                       check=True, capture_output=True, timeout=120, **as_user)
        cls.port = free_port()
        cls.log = open(os.path.join(cls.tmp, "postgres.log"), "w")
        cls.pg = subprocess.Popen([os.path.join(bindir, "postgres"), "-D", data, "-p", str(cls.port),
                                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={cls.tmp}",
                                   "-c", "fsync=off"], stdout=cls.log, stderr=cls.log, **as_user)
        deadline = time.monotonic() + 60
        while True:
            try:
                cls.sql("SELECT 1")
                break
            except (ConnectionLost, PgError):
                if time.monotonic() > deadline or cls.pg.poll() is not None:
                    raise
                time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.pg.terminate()
        cls.pg.wait(timeout=30)
        cls.log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def sql(cls, text, **kw):
        return query("127.0.0.1", cls.port, "postgres", PASSWORD, "postgres", text, **kw)

    def session(self, **kw):
        s = Session("127.0.0.1", self.port, "postgres", PASSWORD, "postgres", connect_timeout=3, **kw)
        self.addCleanup(s.close)
        return s

    def test_query_returns_rows_and_nulls(self):
        self.assertEqual(self.sql("SELECT 1, NULL::text, 'a|b' UNION ALL SELECT 2, 'x', ''"),
                         [["1", None, "a|b"], ["2", "x", ""]])
        self.assertEqual(self.sql("CREATE TABLE IF NOT EXISTS t (id int)"), [])

    def test_a_refused_statement_and_a_wrong_password(self):
        with self.assertRaises(PgError) as e:
            self.sql("SELECT * FROM no_such_table")
        self.assertIn('relation "no_such_table" does not exist', str(e.exception))
        with self.assertRaises(ConnectionLost) as e:
            query("127.0.0.1", self.port, "postgres", "wrong", "postgres", "SELECT 1")
        self.assertIn("password authentication failed", str(e.exception))

    def test_a_session_runs_statements_in_order_and_reports_warnings(self):
        s = self.session(options={"log_min_messages": "fatal"})
        self.assertEqual(s.query("SELECT current_setting('log_min_messages')"), [["fatal"]])
        with self.assertRaises(PgError):
            s.query("SELECT 1/0")
        self.assertEqual(s.query("SELECT 2"), [["2"]], "the session goes on after an error")
        s.query("DO $$BEGIN RAISE WARNING 'canceling wait for synchronous replication'; END$$")
        self.assertTrue(any("synchronous replication" in n for n in s.notices), s.notices)
        s.query("SELECT 3")
        self.assertEqual(s.notices, [], "notices are those of the last statement")

    def test_a_slow_statement_and_a_broken_connection_are_lost(self):
        s = self.session()
        with self.assertRaises(ConnectionLost) as e:
            s.query("SELECT pg_sleep(5)", timeout=0.5)
        self.assertIn("no answer within 0.5 s", str(e.exception))
        s = self.session()
        pid = s.query("SELECT pg_backend_pid()")[0][0]
        self.sql(f"SELECT pg_terminate_backend({pid})")
        with self.assertRaises(ConnectionLost):
            s.query("SELECT 1", timeout=5)

    def test_nothing_listening_is_lost_at_once(self):
        with self.assertRaises(ConnectionLost):
            Session("127.0.0.1", free_port(), "postgres", PASSWORD, "postgres", connect_timeout=1)


if __name__ == "__main__":
    unittest.main()
