"""Reads WRITE_ROWS of a MariaDB binlog with python-mysql-replication and
prints `rows seconds`; used by examples/cdc_bench.rs for comparison."""
import sys
import time

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

port, log_file, log_pos, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
stream = BinLogStreamReader(
    connection_settings={"host": "127.0.0.1", "port": port, "user": "root", "passwd": ""},
    server_id=9999,
    log_file=log_file,
    log_pos=log_pos,
    resume_stream=True,
    only_events=[WriteRowsEvent],
    blocking=False,
    is_mariadb=True,
)
n = 0
t0 = time.time()
for ev in stream:
    for _row in ev.rows:
        n += 1
    if n >= limit:
        break
dt = time.time() - t0
stream.close()
print(n, dt)
