-- First-start script of the MySQL 8 containers. `rpsctl init` (the `init`
-- service) creates the shard databases, tables and grants; MySQL 8 has no
-- BINLOG MONITOR privilege, so the replication-client grant is made here.
CREATE USER IF NOT EXISTS 'rps_pipeline'@'%' IDENTIFIED BY 'rps_pipeline_pw';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rps_pipeline'@'%';
