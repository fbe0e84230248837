"""Tests of `scripts/local-cluster`'s own decisions that need no Postgres: free-port hints, what a
failed `up` leaves and says, and PATH for `instance-manager`:
`python3 -B -m unittest discover -s scripts/lib`."""

import importlib.machinery
import json
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgwarden_cluster import (  # noqa: E402
    Cluster, as_flags, cluster_ports, config_doc, free_bases, new_state, other_ports_hint, validate_config, write_config,
)
from pgwarden_local import Failure, config_problems, find_pg_bindir, pid_alive, port_free  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "local-cluster")


def load_script():
    loader = importlib.machinery.SourceFileLoader("local_cluster", SCRIPT)
    spec = importlib.util.spec_from_loader("local_cluster", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


lc = load_script()


def new_cluster(test, n=3, recovery=None):
    tmp = tempfile.TemporaryDirectory(prefix="pgwarden-lc-test-")
    test.addCleanup(tmp.cleanup)
    cluster = Cluster(tmp.name, cmd="scripts/local-cluster")
    cluster.state = new_state(n, [15432 + i for i in range(n)], [18001 + i for i in range(n)],
                              dict(lease_duration=15, renew_deadline=10, retry_period=2, fence_budget=2), None,
                              base_port=15432, api_base_port=18001, name="local", archive=None, recovery=recovery)
    for inst in cluster.instances:
        os.makedirs(cluster.inst_dir(inst))
    return cluster


class FreePortsTest(unittest.TestCase):
    def test_the_suggested_ports_skip_a_taken_one_and_are_free(self):
        with socket.socket() as held:
            held.bind(("127.0.0.1", 0))
            held.listen()
            taken = held.getsockname()[1]
            # A block whose metrics port (API + 1186) is the taken one must be skipped too.
            start_api = taken - 1186
            found = free_bases(3, start_pg=taken, start_api=start_api, step=7, tries=20)
            self.assertIsNotNone(found)
            pg, api = found
            ports = cluster_ports(pg, api, 3)
            self.assertNotIn(taken, ports)
            self.assertTrue(all(port_free(p) for p in ports), ports)

    def test_the_hint_names_ports_only_when_they_are_free(self):
        self.assertIn("(those ports are free now)", other_ports_hint(3))
        hint = other_ports_hint(3, is_free=lambda _port: False)
        self.assertNotRegex(hint, r"--base-port \d")
        self.assertIn("ss -ltn", hint)


class FailedUpTest(unittest.TestCase):
    def start_fake_manager(self, cluster, name):
        """A process whose command line names the instance's config, as a manager's does."""
        inst = cluster.instance(name)
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", cluster.config_path(inst)])
        self.addCleanup(lambda: (proc.kill(), proc.wait()))
        with open(cluster.pid_path(inst), "w") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def test_a_failed_up_of_a_new_cluster_stops_what_it_started_and_says_down_purge(self):
        cluster = new_cluster(self)
        procs = {n: self.start_fake_manager(cluster, n) for n in ("pg-2", "pg-3")}
        failure = Failure("pg-1: the instance manager exited with code 3 before the cluster was ready",
                          "read /x/pg-1/manager.log; fix the cause, then `scripts/local-cluster start pg-1`")
        got = lc.failed_up(cluster, procs, True, failure)
        for name, proc in procs.items():
            self.assertEqual(proc.wait(timeout=10), -15, name)
            self.assertFalse(pid_alive(proc.pid), name)
            self.assertIsNone(cluster.manager_pid(cluster.instance(name)))
        self.assertEqual(got.message, failure.message)
        self.assertIn("read /x/pg-1/manager.log", got.hint)
        self.assertIn("nothing this `up` started is left running", got.hint)
        self.assertIn("`scripts/local-cluster down --purge`", got.hint)
        self.assertNotIn("start pg-1", got.hint)

    def test_a_failed_restore_says_the_target_is_fixed_at_creation(self):
        cluster = new_cluster(self, recovery={"sourceCluster": "local", "store": {"destination": "file:///a"},
                                              "target": {"time": "2026-01-01T00:00:00Z"}})
        got = lc.failed_up(cluster, {}, True, Failure("pg-1 exited", "read LOG; fix it, then `x start pg-1`"))
        self.assertIn("target after the end of a backup", got.hint)
        self.assertIn("down --purge", got.hint)
        self.assertNotIn("start pg-1", got.hint)

    def test_a_failed_up_of_an_existing_cluster_says_up_again(self):
        cluster = new_cluster(self)
        got = lc.failed_up(cluster, {}, False, Failure("pg-2 not ready", "read LOG; a slow machine may need --timeout"))
        self.assertIn("`scripts/local-cluster up` again; a slow machine may need --timeout", got.hint)
        self.assertNotIn("down --purge", got.hint)


class BrokenPipeTest(unittest.TestCase):
    def test_logs_into_a_reader_that_stops_early_prints_no_traceback(self):
        # `scripts/local-cluster logs pg-1 | head -1`: more than a pipe's buffer of output.
        cluster = new_cluster(self)
        cluster.save()
        with open(cluster.log_path(cluster.instance("pg-1")), "w") as f:
            for i in range(5000):
                f.write(f'{{"level":"INFO","message":"line {i} of a long manager log"}}\n')
        proc = subprocess.Popen([sys.executable, "-B", SCRIPT, "logs", "pg-1", "-n", "5000", "--dir", cluster.dir],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.readline()
        proc.stdout.close()
        _, err = proc.communicate(timeout=30)
        self.assertRegex(first, rb'^\{"level":"INFO","message":"line \d+ of a long manager log"\}\n$',
                         "a whole line, never a partial one")
        self.assertNotIn(b"Traceback", err, err.decode(errors="replace"))
        self.assertNotIn(b"BrokenPipeError", err, err.decode(errors="replace"))
        self.assertEqual(proc.returncode, 141)


class TlsConfigTest(unittest.TestCase):
    def test_a_tls_cluster_requires_tls_and_a_plain_one_does_not(self):
        cluster = new_cluster(self)
        self.assertNotIn("requireTls", config_doc(cluster, cluster.instances[0], "/usr/bin")["postgres"])
        cluster.state["tls"] = True
        doc = config_doc(cluster, cluster.instances[0], "/usr/bin")
        self.assertIs(doc["postgres"]["requireTls"], True)
        self.assertEqual(doc["postgres"]["tls"]["certFile"], os.path.join(cluster.dir, "tls", "tls.crt"))
        self.assertEqual(doc["api"]["tls"]["clientAuth"], "optional")


class ConfigFileTest(unittest.TestCase):
    def test_the_file_is_comments_then_json_naming_every_member(self):
        cluster = new_cluster(self)
        inst = cluster.instances[1]
        write_config(cluster, inst, "/usr/bin")
        with open(cluster.config_path(inst)) as f:
            text = f.read()
        comments = [line for line in text.splitlines() if line.startswith("#")]
        self.assertTrue(any("config check" in c for c in comments), comments)
        doc = json.loads("\n".join(line for line in text.splitlines() if not line.startswith("#")))
        self.assertEqual(doc["name"], "pg-2")
        self.assertEqual([m["name"] for m in doc["members"]], ["pg-1", "pg-2", "pg-3"])
        self.assertEqual(doc["lease"]["leaseDurationSeconds"], 15)
        self.assertEqual(doc["api"]["tokenFile"], cluster.secret_path("api_token"))
        write_config(cluster, inst, "/elsewhere")  # never overwritten: it may have been edited
        with open(cluster.config_path(inst)) as f:
            self.assertEqual(f.read(), text)


def fake_manager(test, exit_code, stderr):
    """A stand-in for `instance-manager` that answers `config check` with EXIT_CODE and STDERR."""
    tmp = tempfile.TemporaryDirectory(prefix="pgwarden-fake-manager-")
    test.addCleanup(tmp.cleanup)
    path = os.path.join(tmp.name, "instance-manager")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\ncat >&2 <<'EOF'\n{stderr}\nEOF\nexit {exit_code}\n")
    os.chmod(path, 0o755)
    return path


class ConfigCheckTest(unittest.TestCase):
    def test_every_problem_is_one_line_with_its_fix(self):
        binary = fake_manager(self, 2, "error: config file /x/c.yaml is invalid:\n"
                                        "  postgres.port: 70000 is not a valid port (fix: use a number between 1 and 65535)\n"
                                        "  lease.path: is missing for backend file (fix: set the path of the shared lease file)")
        self.assertEqual(config_problems(binary, "/x/c.yaml"),
                         ["postgres.port: 70000 is not a valid port (fix: use a number between 1 and 65535)",
                          "lease.path: is missing for backend file (fix: set the path of the shared lease file)"])

    def test_a_parse_error_is_one_problem(self):
        binary = fake_manager(self, 2, "error: config file /x/c.yaml: postgres: unknown field `prot`\n"
                                        "  hint: check the spelling")
        self.assertEqual(config_problems(binary, "/x/c.yaml"),
                         ["config file /x/c.yaml: postgres: unknown field `prot` hint: check the spelling"])

    def test_a_binary_without_config_check_is_named(self):
        binary = fake_manager(self, 2, "error: unrecognized subcommand 'config'")
        with self.assertRaises(Failure) as e:
            config_problems(binary, "/x/c.yaml")
        self.assertIn("has no `config check` command", e.exception.message)
        self.assertIn("build the current instance manager", e.exception.hint)

    def test_a_valid_file_has_no_problems(self):
        self.assertEqual(config_problems(fake_manager(self, 0, ""), "/x/c.yaml"), [])


# The suite (instance-manager/tests/local_cluster_scripts.rs) passes the binary it built.
MANAGER_BIN = os.environ.get("PGWARDEN_TEST_MANAGER_BIN")


@unittest.skipUnless(MANAGER_BIN and find_pg_bindir(), "needs PGWARDEN_TEST_MANAGER_BIN and Postgres binaries")
class RealBinaryTest(unittest.TestCase):
    """What `up` writes is accepted by the binary itself, and what it refuses is reported."""

    def test_every_kind_of_cluster_up_writes_is_accepted(self):
        rec = {"store": {"destination": "file:///tmp/pgwarden-src-archive"}, "sourceCluster": "local",
               "target": {"time": "2026-11-30T12:00:00+00:00"}}
        for kw in ({}, {"tls": True}, {"synchronous": 1},
                   {"archive": {"destination": "file:///tmp/pgwarden-archive"}, "recovery": rec, "name": "restored"},
                   {"lease_backend": {"backend": "kubernetes", "failsafe": False}}):
            with self.subTest(**{k: str(v) for k, v in kw.items()}):
                cluster = new_cluster(self)
                cluster.state = new_state(3, [15432, 15433, 15434], [18001, 18002, 18003],
                                          dict(lease_duration=15, renew_deadline=10, retry_period=2, fence_budget=2),
                                          kw.get("synchronous"), name=kw.get("name", "local"),
                                          archive=kw.get("archive"), recovery=kw.get("recovery"))
                cluster.state["tls"] = kw.get("tls", False)
                cluster.state["lease_backend"] = kw.get("lease_backend")
                validate_config(cluster, MANAGER_BIN, find_pg_bindir())

    def test_a_restore_that_would_archive_into_its_source_is_refused(self):
        cluster = new_cluster(self)
        store = {"destination": "file:///tmp/pgwarden-src-archive"}
        cluster.state["archive"] = store
        cluster.state["recovery"] = {"store": store, "sourceCluster": "local"}
        with self.assertRaises(Failure) as e:
            validate_config(cluster, MANAGER_BIN, find_pg_bindir())
        self.assertIn("bootstrap.recovery: restores from the archive this cluster would archive into", e.exception.message)

    def test_a_refused_timing_is_reported_with_the_options_of_up(self):
        cluster = new_cluster(self)
        cluster.state["lease"] = dict(lease_duration=5, renew_deadline=10, retry_period=2, fence_budget=2)
        with self.assertRaises(Failure) as e:
            validate_config(cluster, MANAGER_BIN, find_pg_bindir())
        self.assertIn("config check", e.exception.message)
        self.assertIn("--lease-duration", e.exception.message)
        self.assertNotIn("leaseDurationSeconds", e.exception.message)
        self.assertIn("fix the options of `up`", e.exception.hint)


class TimingMessageTest(unittest.TestCase):
    def test_a_refused_timing_names_the_option_of_up(self):
        # The manager's own words (lease/timing.rs), as `up` relays them.
        manager = ("lease: lease.leaseDurationSeconds (5) must be greater than lease.renewDeadlineSeconds + "
                   "lease.fenceBudgetSeconds (10 + 2 = 12), so a stale primary has stopped before its lease can "
                   "expire: raise lease.leaseDurationSeconds or lower lease.renewDeadlineSeconds")
        got = as_flags(manager)
        self.assertNotIn("Seconds", got)
        self.assertIn("--lease-duration (5) must be greater than --renew-deadline + --fence-budget", got)
        self.assertIn("raise --lease-duration or lower --renew-deadline", got)


class LastChangeTest(unittest.TestCase):
    def lines(self, record_term, reported_term):
        cluster = new_cluster(self)
        with open(cluster.lease_path, "w") as f:
            f.write(json.dumps({"record": {"holder": "pg-2", "transitions": record_term}}))
        last = {"kind": "failover" if reported_term == 2 else "switchover", "from": "pg-1", "to": "pg-2",
                "term": reported_term, "at": "2026-11-22T08:53:19.57Z", "duration_ms": 120}
        entries = [{"name": n, "role": r, "manager_pid": 1,
                    "lease": {"holder": "pg-2", "term": reported_term, "last_transition": last}}
                   for n, r in (("pg-1", "replica"), ("pg-2", "primary"))]
        return lc.lease_lines(cluster, entries)[1]

    def test_a_change_older_than_the_lease_is_not_shown_as_the_last_one(self):
        lines = self.lines(record_term=3, reported_term=2)
        self.assertIn("last change: to pg-2, term 3, in progress (pg-2 has not reported it yet)", lines)
        self.assertFalse(any("failover pg-1 -> pg-2" in line for line in lines), lines)

    def test_a_reported_change_of_the_current_term_is_shown(self):
        lines = self.lines(record_term=3, reported_term=3)
        self.assertTrue(any(line.startswith("last change: switchover pg-1 -> pg-2, term 3") for line in lines), lines)


class PathTest(unittest.TestCase):
    def test_env_puts_the_clusters_manager_first_on_path_once(self):
        cluster = new_cluster(self)
        bindir = os.path.join(cluster.dir, "bin")
        os.makedirs(bindir)
        binary = os.path.join(bindir, "instance-manager")
        with open(binary, "w") as f:
            f.write("#!/bin/sh\n")
        os.chmod(binary, 0o755)
        cluster.state["manager_bin"] = binary
        path = lc.path_with_manager(cluster, f"/usr/bin:{bindir}:/bin")
        self.assertEqual(path, f"{bindir}:/usr/bin:/bin")
        self.assertEqual(lc.path_with_manager(cluster, path), path)

    def test_a_binary_of_another_name_is_not_put_on_path(self):
        cluster = new_cluster(self)
        cluster.state["manager_bin"] = sys.executable
        self.assertIsNone(lc.path_with_manager(cluster, "/usr/bin"))


if __name__ == "__main__":
    unittest.main()
