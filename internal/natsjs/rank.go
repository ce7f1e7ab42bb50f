package natsjs

// RankSubject names the subject the ranker publishes score changes and
// leaderboard snapshots to, p.out.rank: inside the OUT stream, so that push
// sees them in one total order with the claims that caused them
// (docs/pipeline.md, "Push ids"). Consumers of the workers' results alone
// filter on p.out.* and skip the events they do not want.
func (t Topology) RankSubject() string { return t.Prefix + ".out.rank" }
