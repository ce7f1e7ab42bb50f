-- 0001_scores: durable scores for the ranker and the leaderboard fallback.
--
-- Text keys use COLLATE "C" (byte order) so that PostgreSQL lists ties in
-- exactly the order Redis does (Redis compares sorted-set members with memcmp).

-- One row per player ever seen (a move or a claim). score is the sum of the
-- points of the player's claims; reached_pos is the log position of the claim
-- that brought the player to that score (the greatest position among the
-- player's claims, since points are > 0); 0 while the player has no claim.
CREATE TABLE players (
    player      text COLLATE "C" PRIMARY KEY,
    score       bigint NOT NULL DEFAULT 0 CHECK (score >= 0),
    reached_pos bigint NOT NULL DEFAULT 0 CHECK (reached_pos >= 0),
    first_seen  timestamptz NOT NULL DEFAULT now()
);

-- The leaderboard order: score descending, then who reached it first, then
-- the player id. Only players with a score are listed, so the index is
-- partial and seen-only players cost it nothing. It also answers
-- "count(*) WHERE score > 0 AND score > x" (rank) as an index-only scan.
CREATE INDEX players_board ON players (score DESC, reached_pos ASC, player ASC)
    WHERE score > 0;

-- One row per claimed treasure: a treasure is claimed at most once, so a
-- redelivered claim conflicts on the primary key and counts nothing.
-- pos is the claim's log position (see players.reached_pos); seq is the seq
-- of the move that claimed it.
CREATE TABLE claims (
    treasure_id text COLLATE "C" PRIMARY KEY CHECK (length(treasure_id) BETWEEN 1 AND 64),
    player      text COLLATE "C" NOT NULL,
    points      bigint NOT NULL CHECK (points > 0),
    node        bigint NOT NULL CHECK (node >= 0),
    seq         bigint NOT NULL CHECK (seq >= 0),
    pos         bigint NOT NULL CHECK (pos >= 0),
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- A single row of board-wide counters kept in the same transaction as the
-- scores: scoring = the number of players with score > 0 (the leaderboard's
-- "players"), so that figure costs one row read instead of a count.
CREATE TABLE board (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    scoring bigint NOT NULL DEFAULT 0 CHECK (scoring >= 0)
);
INSERT INTO board DEFAULT VALUES;
