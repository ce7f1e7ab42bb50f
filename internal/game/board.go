package game

// Entry is one line of the leaderboard, or one player's standing: the one
// type that PostgreSQL (pgstore), Redis (redisstore), the ranker, push's
// JSON (wire) and the load generator's reader (loadgen) share. The JSON
// names are SPEC's.
type Entry struct {
	Player string `json:"player"`
	Score  int64  `json:"score"`
	Rank   int64  `json:"rank"` // 1 + the number of players with a strictly higher score
}

// RankTop sets the ranks of a leaderboard prefix: entries sorted by score
// descending, starting at the top. An entry's rank is 1 + the number of
// entries above it with a higher score, which for a prefix of the whole
// board is 1 + the number of players with a higher score.
func RankTop(top []Entry) {
	for i := range top {
		if i > 0 && top[i].Score == top[i-1].Score {
			top[i].Rank = top[i-1].Rank
		} else {
			top[i].Rank = int64(i) + 1
		}
	}
}
