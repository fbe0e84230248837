//! `pg_hba.conf` and `pg_ident.conf`.
//!
//! Local connections use peer authentication through the `pgwarden` ident map, which lets
//! the manager's OS user (root on a developer machine) and Postgres' OS user in as the
//! superuser, and any other OS user in as the database user of the same name. Over TCP
//! everything needs a SCRAM password, and with `postgres.requireTls` a TLS connection
//! (`hostssl`: plain TCP finds no rule and is refused). The user's `postgres.pgHba` lines come
//! first, so they can reject or loosen rules for specific networks.

use super::{REPLICATION_USER, SUPERUSER};

/// The text of `pg_hba.conf`; `require_tls` makes pgwarden's TCP rules `hostssl`.
pub fn render_hba(user_lines: &[String], require_tls: bool) -> String {
    let host = if require_tls { "hostssl" } else { "host" };
    let mut s = String::from(
        "# Managed by pgwarden. Do not edit: add rules with postgres.pgHba.\n\
         local all all peer map=pgwarden\n",
    );
    if !user_lines.is_empty() {
        s.push_str("# postgres.pgHba\n");
        for line in user_lines {
            s.push_str(line.trim());
            s.push('\n');
        }
    }
    s.push_str(&format!(
        "# pgwarden defaults\n{host} replication {REPLICATION_USER} all scram-sha-256\n{host} all all all scram-sha-256\n"
    ));
    s
}

/// The text of `pg_ident.conf` for a manager running as `manager_user` and a Postgres
/// running as `os_user`.
pub fn render_ident(manager_user: &str, os_user: &str) -> String {
    let mut s = String::from("# Managed by pgwarden. Do not edit.\n");
    for user in [manager_user, os_user] {
        s.push_str(&format!("pgwarden {user} {SUPERUSER}\n"));
    }
    s.push_str("pgwarden /^(.*)$ \\1\n");
    s
}
