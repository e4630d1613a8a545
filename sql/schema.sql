-- The event table, fixed by the upstream game servers (DESIGN.md section 3).
-- `rpsctl init` creates it in every shard database `rps_shard_<n>`.
CREATE TABLE IF NOT EXISTS match_result_events (
  id               BIGINT PRIMARY KEY AUTO_INCREMENT,
  event_id         CHAR(36)  NOT NULL,
  match_id         BIGINT    NOT NULL,
  version          INT       NOT NULL,
  event_type       ENUM('started','moved','finished','timed_out','voided') NOT NULL,
  season_id        CHAR(6)   NOT NULL,
  player_a_id      BIGINT    NOT NULL,
  player_b_id      BIGINT    NOT NULL,
  gesture_a        ENUM('rock','paper','scissors') NULL,
  gesture_b        ENUM('rock','paper','scissors') NULL,
  winner_player_id BIGINT    NULL,
  loser_player_id  BIGINT    NULL,
  outcome          ENUM('win','lose','draw') NULL,
  deadline_at      DATETIME(6) NULL,
  occurred_at      DATETIME(6) NOT NULL,
  UNIQUE KEY uk_event (event_id),
  UNIQUE KEY uk_match_version (match_id, version)
) ENGINE=InnoDB;
