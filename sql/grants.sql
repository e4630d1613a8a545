-- The pipeline's least-privilege account. `rpsctl init` runs this on every
-- server with {user}, {password}, {database} and {table} filled in from
-- rps.toml (the user and password of each server's `url`).
--
--   REPLICATION SLAVE   read the binlog (COM_BINLOG_DUMP)
--   REPLICATION CLIENT  SHOW MASTER STATUS / SHOW BINARY LOGS
--   BINLOG MONITOR      the same on MariaDB 10.5+ (REPLICATION CLIENT is its alias there)
--   SELECT              snapshots, replay, export, verify
--   INSERT              the compensator's `timed_out` appends, on the event tables only
--
-- On MySQL `rpsctl init` also grants LOCK TABLES on each shard database: a
-- consistent snapshot (bootstrap, replay) holds a READ lock on the event
-- tables for the two round trips that start it, because MySQL, unlike
-- MariaDB, does not report the binlog position of a snapshot
-- (docs/operations.md, "Privileges"), and XA_RECOVER_ADMIN on *.*: `rpsctl
-- xa` lists other sessions' prepared XA branches with XA RECOVER, which MySQL
-- shows only to accounts with it (MariaDB shows them to any account).
CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}';
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{user}'@'%';
GRANT SELECT ON `{database}`.* TO '{user}'@'%';
GRANT INSERT ON `{database}`.`{table}` TO '{user}'@'%';
